#pragma once
// The registry of every SWITCHYARD_* environment variable: each one is
// declared once (name, type, default, allowed values, one line of doc) in a
// static table in settings.cpp, and read only through the functions below.
//
// Values are read from the environment and validated on the first call that
// needs one (all settings at once, so one bad value is reported whichever
// setting is asked for first) and kept for the life of the process.
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace switchyard {

enum class SettingType {
  kInt,     // a decimal integer within [min, max]
  kDouble,  // a decimal number within [min, max]
  kEnum,    // one of `choices` (case-insensitive)
  kList,    // a comma list of `choices` (case-insensitive); a leading '^' means "all except"
};

/// One entry of the registry.
struct SettingSpec {
  std::string_view name;  // SWITCHYARD_...
  SettingType type = SettingType::kInt;
  std::string_view default_value;  // as it would be written in the environment
  double min = 0;                  // kInt, kDouble: inclusive range
  double max = 0;
  std::string_view choices;  // kEnum, kList: comma-separated, upper case
  std::string_view doc;      // one line
};

/// A validated value and where it came from.
struct SettingValue {
  const SettingSpec* spec = nullptr;
  std::string text;  // normalised: enum and list values in upper case
  std::int64_t int_value = 0;
  double double_value = 0;
  bool from_environment = false;

  /// "environment" or "default".
  const char* source() const { return from_environment ? "environment" : "default"; }
};

/// The registry, in the order `switchyard env` lists it. Thread-safe.
std::span<const SettingSpec> setting_specs();

/// What `spec` accepts, e.g. "an integer in [0, 100000]" or "one of NONE,
/// WARN, INFO, TRACE". Thread-safe.
std::string setting_allowed(const SettingSpec& spec);

/// Validates `text` against `spec` and returns the parsed value (marked as
/// coming from the environment). Throws Error(kInvalidArgument)
/// "NAME=text: expected ..." naming the variable, the value and what is
/// allowed. Thread-safe; reads no environment.
SettingValue parse_setting(const SettingSpec& spec, std::string_view text);

/// Reads and validates every setting if that has not happened yet. Throws
/// Error(kInvalidArgument) for the first (in registry order) bad value; the
/// next call tries again. An empty variable counts as unset. Thread-safe.
void load_settings();

/// Every setting with its value and source, in registry order. Throws like
/// load_settings. Thread-safe.
std::vector<SettingValue> list_settings();

/// The value of a kInt setting. Throws like load_settings, or
/// Error(kInternal) if `name` is not a kInt setting of the registry.
/// Thread-safe.
std::int64_t setting_int(std::string_view name);

/// The value of a kDouble setting; see setting_int.
double setting_double(std::string_view name);

/// The normalised text of any setting (e.g. "INFO", "^COMM,GRAPH"); see
/// setting_int.
std::string setting_text(std::string_view name);

/// Tests only: forgets every value read (and the log level and subsystem mask
/// derived from them), so the next use reads the environment again. Not safe
/// while another thread uses settings or logs.
void reset_settings_for_testing();

}  // namespace switchyard
