#include "switchyard/runtime/settings.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>

#include "switchyard/runtime/error.hpp"
#include "switchyard/runtime/log.hpp"

namespace switchyard {
namespace {

// NOTE: the one declaration of every SWITCHYARD_* variable, and the only
// code that reads them from the environment (read_environment below).
// docs/settings.md lists the same table for readers; `switchyard env` prints
// it.
constexpr SettingSpec kSettings[] = {
    {.name = "SWITCHYARD_POLL_US",
     .type = SettingType::kInt,
     .default_value = "200",
     .min = 0,
     .max = 100000,
     .choices = "",
     .doc = "longest sleep in microseconds (0 counts as 1) between tests of a cross-node exchange that a "
            "communication thread waits for"},
    {.name = "SWITCHYARD_DEBUG",
     .type = SettingType::kEnum,
     .default_value = "WARN",
     .choices = "NONE,WARN,INFO,TRACE",
     .doc = "log level of the lines written to stderr"},
    {.name = "SWITCHYARD_DEBUG_SUBSYS",
     .type = SettingType::kList,
     .default_value = "ALL",
     .choices = "INIT,COMM,GRAPH,EXPERTS,FORMATS,TRAIN,ALL",
     .doc = "subsystems that log"},
    {.name = "SWITCHYARD_TIMEOUT_S",
     .type = SettingType::kDouble,
     .default_value = "600",
     .min = 0.1,
     .max = 1e6,
     .choices = "",
     .doc = "seconds a collective or exchange may go without completing before every rank ends the job, naming "
            "the operation and the ranks it waited on (--timeout overrides it)"},
};

std::vector<std::string_view> split(std::string_view text, char sep) {
  std::vector<std::string_view> out;
  for (;;) {
    const auto at = text.find(sep);
    out.push_back(text.substr(0, at));
    if (at == std::string_view::npos) return out;
    text.remove_prefix(at + 1);
  }
}

std::string upper(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

// "A, B, C" from "A,B,C".
std::string readable(std::string_view choices) {
  std::string out;
  for (auto c : split(choices, ',')) out += (out.empty() ? "" : ", ") + std::string(c);
  return out;
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// The value as the error message shows it: control characters (a newline
// would break the one-line message) as '?'.
std::string printable(std::string_view text) {
  std::string out(text);
  for (char& c : out)
    if (std::iscntrl(static_cast<unsigned char>(c))) c = '?';
  return out;
}

bool is_choice(const SettingSpec& spec, std::string_view name) {
  const auto all = split(spec.choices, ',');
  return std::find(all.begin(), all.end(), name) != all.end();
}

// NOTE: the whole value must parse (from_chars stops at the first bad
// character, which atol would silently accept).
template <typename T>
bool parse_number(std::string_view text, T* out) {
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, *out);
  return ec == std::errc() && ptr == end;
}

std::mutex g_mutex;
std::optional<std::vector<SettingValue>> g_values;  // guarded by g_mutex

std::vector<SettingValue> read_environment() {
  std::vector<SettingValue> values;
  for (const auto& spec : kSettings) {
    const std::string name(spec.name);
    const char* env = std::getenv(name.c_str());
    if (env != nullptr && *env != '\0') {
      values.push_back(parse_setting(spec, env));
    } else {
      values.push_back(parse_setting(spec, spec.default_value));
      values.back().from_environment = false;
    }
  }
  return values;
}

const SettingValue& find_locked(std::string_view name) {
  for (const auto& v : *g_values)
    if (v.spec->name == name) return v;
  throw Error(ErrorCode::kInternal, "setting " + std::string(name) + " is not in the registry");
}

SettingValue get(std::string_view name, std::optional<SettingType> type) {
  std::lock_guard lock(g_mutex);
  if (!g_values) g_values = read_environment();
  const SettingValue& v = find_locked(name);
  check(!type || v.spec->type == *type, ErrorCode::kInternal, "setting " + std::string(name) + " has another type");
  return v;
}

}  // namespace

std::span<const SettingSpec> setting_specs() { return kSettings; }

std::string setting_allowed(const SettingSpec& spec) {
  switch (spec.type) {
    case SettingType::kInt: return "an integer in [" + number(spec.min) + ", " + number(spec.max) + "]";
    case SettingType::kDouble: return "a number in [" + number(spec.min) + ", " + number(spec.max) + "]";
    case SettingType::kEnum: return "one of " + readable(spec.choices);
    case SettingType::kList: return "a comma list of " + readable(spec.choices) + ", with a leading ^ for all except";
  }
  return "?";
}

SettingValue parse_setting(const SettingSpec& spec, std::string_view text) {
  SettingValue v{.spec = &spec, .text = std::string(text), .from_environment = true};
  const auto reject = [&](const std::string& detail) {
    throw Error(ErrorCode::kInvalidArgument,
                std::string(spec.name) + "=" + printable(text) + ": expected " + setting_allowed(spec) + detail);
  };
  switch (spec.type) {
    case SettingType::kInt:
      if (!parse_number(text, &v.int_value) || v.int_value < spec.min || v.int_value > spec.max) reject("");
      v.double_value = static_cast<double>(v.int_value);
      break;
    case SettingType::kDouble:
      // NOTE: !(in range) rather than (out of range) also rejects NaN.
      if (!parse_number(text, &v.double_value) || !(v.double_value >= spec.min && v.double_value <= spec.max))
        reject("");
      break;
    case SettingType::kEnum:
      v.text = upper(text);
      if (!is_choice(spec, v.text)) reject("");
      break;
    case SettingType::kList: {
      v.text = upper(text);
      std::string_view items = v.text;
      if (items.starts_with('^')) items.remove_prefix(1);
      for (auto item : split(items, ','))
        if (!is_choice(spec, item))
          reject(item.empty() ? "; got an empty name" : "; got unknown name '" + printable(item) + "'");
      break;
    }
  }
  return v;
}

void load_settings() {
  std::lock_guard lock(g_mutex);
  if (!g_values) g_values = read_environment();
}

std::vector<SettingValue> list_settings() {
  std::lock_guard lock(g_mutex);
  if (!g_values) g_values = read_environment();
  return *g_values;
}

std::int64_t setting_int(std::string_view name) { return get(name, SettingType::kInt).int_value; }

double setting_double(std::string_view name) { return get(name, SettingType::kDouble).double_value; }

std::string setting_text(std::string_view name) { return get(name, std::nullopt).text; }

void reset_settings_for_testing() {
  {
    std::lock_guard lock(g_mutex);
    g_values.reset();
  }
  detail::reset_log_state();
}

}  // namespace switchyard
