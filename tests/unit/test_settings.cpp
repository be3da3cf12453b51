// The SWITCHYARD_* settings registry (defaults, environment overrides, one-line
// rejections naming the variable) and the levelled, subsystem-masked log
// built on it (nothing evaluated when off, one prefixed line when on).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "switchyard/runtime/error.hpp"
#include "switchyard/runtime/log.hpp"
#include "switchyard/runtime/settings.hpp"

namespace {

using namespace switchyard;

constexpr const char* kVariables[] = {"SWITCHYARD_POLL_US", "SWITCHYARD_DEBUG", "SWITCHYARD_DEBUG_SUBSYS",
                                      "SWITCHYARD_TIMEOUT_S"};

constexpr std::uint32_t bit(LogSubsys s) { return std::uint32_t{1} << static_cast<int>(s); }
constexpr std::uint32_t kAll = (std::uint32_t{1} << static_cast<int>(LogSubsys::kCount)) - 1;

// Every test starts and ends with no SWITCHYARD_* setting in the environment
// (the process's own values do not matter here: it only runs these tests).
class Settings : public ::testing::Test {
 protected:
  void SetUp() override { clear(); }
  void TearDown() override {
    clear();
    set_log_rank(-1);
  }
  static void clear() {
    for (const char* name : kVariables) unsetenv(name);
    reset_settings_for_testing();
  }
  // Sets the variable and forgets what was read, as a fresh process would.
  static void set(const char* name, const char* value) {
    setenv(name, value, 1);
    reset_settings_for_testing();
  }
};

// Expects the next read of the settings to throw an invalid-argument error
// whose message is one line and holds every needle.
void expect_rejected(const std::vector<std::string>& needles) {
  try {
    load_settings();
    ADD_FAILURE() << "no error; expected one mentioning " << needles.front();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  }
}

std::string host_name() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  const std::string host(buf);
  return host.substr(0, host.find('.'));
}

TEST_F(Settings, RegistryEntriesAreNamedDocumentedAndTheirDefaultsValid) {
  ASSERT_EQ(setting_specs().size(), std::size(kVariables));
  for (std::size_t i = 0; i < setting_specs().size(); ++i) {
    const SettingSpec& spec = setting_specs()[i];
    EXPECT_EQ(spec.name, kVariables[i]);
    EXPECT_FALSE(spec.doc.empty()) << spec.name;
    EXPECT_NO_THROW(parse_setting(spec, spec.default_value)) << spec.name;
  }
}

TEST_F(Settings, DefaultsWhenTheEnvironmentIsSilent) {
  EXPECT_EQ(setting_int("SWITCHYARD_POLL_US"), 200);
  EXPECT_EQ(setting_text("SWITCHYARD_DEBUG"), "WARN");
  EXPECT_EQ(setting_text("SWITCHYARD_DEBUG_SUBSYS"), "ALL");
  EXPECT_EQ(log_level(), LogLevel::kWarn);
  EXPECT_EQ(log_subsys_mask(), kAll);
  for (const auto& v : list_settings()) {
    EXPECT_STREQ(v.source(), "default") << v.spec->name;
    EXPECT_EQ(v.text, v.spec->default_value);
  }
}

TEST_F(Settings, EmptyVariableCountsAsUnset) {
  set("SWITCHYARD_POLL_US", "");
  EXPECT_EQ(setting_int("SWITCHYARD_POLL_US"), 200);
  EXPECT_STREQ(list_settings()[0].source(), "default");
}

TEST_F(Settings, EnvironmentOverridesDefaultsAndIsNormalised) {
  setenv("SWITCHYARD_POLL_US", "50", 1);
  setenv("SWITCHYARD_TIMEOUT_S", "2.5", 1);
  setenv("SWITCHYARD_DEBUG", "info", 1);
  set("SWITCHYARD_DEBUG_SUBSYS", "comm,Graph");
  EXPECT_EQ(setting_int("SWITCHYARD_POLL_US"), 50);
  EXPECT_EQ(setting_double("SWITCHYARD_TIMEOUT_S"), 2.5);
  EXPECT_EQ(setting_text("SWITCHYARD_DEBUG"), "INFO");
  EXPECT_EQ(setting_text("SWITCHYARD_DEBUG_SUBSYS"), "COMM,GRAPH");
  EXPECT_EQ(log_level(), LogLevel::kInfo);
  EXPECT_EQ(log_subsys_mask(), bit(LogSubsys::kComm) | bit(LogSubsys::kGraph));
  for (const auto& v : list_settings()) EXPECT_STREQ(v.source(), "environment") << v.spec->name;
}

TEST_F(Settings, RangeLimitsAreAccepted) {
  set("SWITCHYARD_POLL_US", "0");
  EXPECT_EQ(setting_int("SWITCHYARD_POLL_US"), 0);
  set("SWITCHYARD_POLL_US", "100000");
  EXPECT_EQ(setting_int("SWITCHYARD_POLL_US"), 100000);
}

TEST_F(Settings, ValuesAreReadOnceUntilReset) {
  set("SWITCHYARD_POLL_US", "7");
  EXPECT_EQ(setting_int("SWITCHYARD_POLL_US"), 7);
  setenv("SWITCHYARD_POLL_US", "8", 1);
  EXPECT_EQ(setting_int("SWITCHYARD_POLL_US"), 7);
  reset_settings_for_testing();
  EXPECT_EQ(setting_int("SWITCHYARD_POLL_US"), 8);
}

TEST_F(Settings, NonIntegerIsRejectedNamingVariableValueAndRange) {
  set("SWITCHYARD_POLL_US", "abc");
  try {
    setting_int("SWITCHYARD_POLL_US");
    ADD_FAILURE() << "no error for SWITCHYARD_POLL_US=abc";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_STREQ(e.what(), "SWITCHYARD_POLL_US=abc: expected an integer in [0, 100000]");
  }
  for (const char* bad : {"12x", " 12", "1.5", "+5", "0x10"}) {
    set("SWITCHYARD_POLL_US", bad);
    expect_rejected({std::string("SWITCHYARD_POLL_US=") + bad, "expected an integer in [0, 100000]"});
  }
}

TEST_F(Settings, OutOfRangeIntegerIsRejected) {
  for (const char* bad : {"-1", "100001", "99999999999999999999"}) {
    set("SWITCHYARD_POLL_US", bad);
    expect_rejected({std::string("SWITCHYARD_POLL_US=") + bad, "[0, 100000]"});
  }
}

TEST_F(Settings, UnknownLogLevelIsRejected) {
  set("SWITCHYARD_DEBUG", "LOUD");
  expect_rejected({"SWITCHYARD_DEBUG=LOUD", "one of NONE, WARN, INFO, TRACE"});
  set("SWITCHYARD_DEBUG", "INFO\nTRACE");  // the message stays one line
  expect_rejected({"SWITCHYARD_DEBUG=INFO?TRACE"});
}

TEST_F(Settings, UnknownOrEmptySubsystemIsRejected) {
  set("SWITCHYARD_DEBUG_SUBSYS", "COMM,network");
  expect_rejected({"SWITCHYARD_DEBUG_SUBSYS=COMM,network", "unknown name 'NETWORK'", "INIT, COMM"});
  for (const char* bad : {"COMM,", "^", ",GRAPH", "^^COMM"}) {
    set("SWITCHYARD_DEBUG_SUBSYS", bad);
    expect_rejected({std::string("SWITCHYARD_DEBUG_SUBSYS=") + bad});
  }
}

TEST_F(Settings, OneBadValueFailsEveryReadAndIsRetriedOnceFixed) {
  set("SWITCHYARD_DEBUG", "LOUD");
  EXPECT_THROW(setting_int("SWITCHYARD_POLL_US"), Error);
  EXPECT_THROW(list_settings(), Error);
  EXPECT_THROW(log_enabled(LogLevel::kWarn, LogSubsys::kComm), Error);
  setenv("SWITCHYARD_DEBUG", "TRACE", 1);  // no reset: a failed read keeps nothing
  EXPECT_EQ(setting_int("SWITCHYARD_POLL_US"), 200);
  EXPECT_TRUE(log_enabled(LogLevel::kTrace, LogSubsys::kComm));
}

TEST_F(Settings, UnknownNameOrWrongTypeIsAnInternalError) {
  try {
    setting_int("SWITCHYARD_NO_SUCH_THING");
    ADD_FAILURE() << "no error for an unregistered name";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInternal);
  }
  EXPECT_THROW(setting_int("SWITCHYARD_DEBUG"), Error);
}

TEST_F(Settings, DoubleSettingsCheckNumberAndRange) {
  const SettingSpec spec{.name = "SWITCHYARD_TEST_RATIO",
                         .type = SettingType::kDouble,
                         .default_value = "0.5",
                         .min = 0,
                         .max = 1,
                         .choices = "",
                         .doc = "a ratio"};
  EXPECT_DOUBLE_EQ(parse_setting(spec, "0.25").double_value, 0.25);
  EXPECT_DOUBLE_EQ(parse_setting(spec, "1").double_value, 1.0);
  for (const char* bad : {"nan", "1.5", "-0.1", "x", "0.5s"}) {
    try {
      parse_setting(spec, bad);
      ADD_FAILURE() << "no error for " << bad;
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), std::string("SWITCHYARD_TEST_RATIO=") + bad + ": expected a number in [0, 1]");
    }
  }
}

TEST_F(Settings, SubsystemMaskParsing) {
  struct Case {
    const char* text;
    std::uint32_t mask;
  };
  const Case cases[] = {
      {"ALL", kAll},
      {"INIT", bit(LogSubsys::kInit)},
      {"experts,formats,train", bit(LogSubsys::kExperts) | bit(LogSubsys::kFormats) | bit(LogSubsys::kTrain)},
      {"COMM,ALL", kAll},
      {"^COMM", kAll & ~bit(LogSubsys::kComm)},
      {"^comm,TRAIN", kAll & ~bit(LogSubsys::kComm) & ~bit(LogSubsys::kTrain)},
      {"^ALL", 0},
  };
  for (const auto& c : cases) {
    set("SWITCHYARD_DEBUG_SUBSYS", c.text);
    EXPECT_EQ(log_subsys_mask(), c.mask) << c.text;
  }
}

TEST_F(Settings, RegistryChoicesNameEveryLevelAndSubsystem) {
  std::string levels, subsystems;
  for (int l = 0; l <= static_cast<int>(LogLevel::kTrace); ++l)
    levels += (l ? "," : "") + std::string(log_level_name(static_cast<LogLevel>(l)));
  for (int s = 0; s < static_cast<int>(LogSubsys::kCount); ++s)
    subsystems += log_subsys_name(static_cast<LogSubsys>(s)) + std::string(",");
  EXPECT_EQ(setting_specs()[1].choices, levels);
  EXPECT_EQ(setting_specs()[2].choices, subsystems + "ALL");
}

TEST_F(Settings, LevelsIncludeTheLevelsBelow) {
  set("SWITCHYARD_DEBUG", "INFO");
  EXPECT_TRUE(log_enabled(LogLevel::kWarn, LogSubsys::kInit));
  EXPECT_TRUE(log_enabled(LogLevel::kInfo, LogSubsys::kTrain));
  EXPECT_FALSE(log_enabled(LogLevel::kTrace, LogSubsys::kTrain));
  set("SWITCHYARD_DEBUG", "NONE");
  EXPECT_FALSE(log_enabled(LogLevel::kWarn, LogSubsys::kInit));
}

TEST_F(Settings, DisabledLogCallEvaluatesNothingAndWritesNothing) {
  int evaluated = 0;
  // Default level WARN, and the first check (settings not read yet) too.
  testing::internal::CaptureStderr();
  SY_INFO(kComm, "%d", ++evaluated);
  SY_TRACE(kComm, "%d", ++evaluated);
  set("SWITCHYARD_DEBUG", "INFO");
  setenv("SWITCHYARD_DEBUG_SUBSYS", "^COMM", 1);
  reset_settings_for_testing();
  SY_INFO(kComm, "%d", ++evaluated);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(evaluated, 0);
  testing::internal::CaptureStderr();
  SY_INFO(kGraph, "%d", ++evaluated);
  const std::string line = testing::internal::GetCapturedStderr();
  EXPECT_EQ(evaluated, 1);
  EXPECT_NE(line.find("switchyard INFO GRAPH 1\n"), std::string::npos) << line;
}

TEST_F(Settings, LogLineHasHostPidRankLevelAndSubsystem) {
  set("SWITCHYARD_DEBUG", "TRACE");
  const std::string host_pid = host_name() + ":" + std::to_string(getpid());
  testing::internal::CaptureStderr();
  SY_WARN(kInit, "unknown rank %s", "here");
  set_log_rank(3);
  SY_TRACE(kGraph, "task %d of %d", 2, 5);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), host_pid + " [?] switchyard WARN INIT unknown rank here\n" +
                                                        host_pid + " [3] switchyard TRACE GRAPH task 2 of 5\n");
}

TEST_F(Settings, LongLogLineIsWrittenWhole) {
  set("SWITCHYARD_DEBUG", "INFO");
  const std::string long_text(5000, 'x');
  testing::internal::CaptureStderr();
  SY_INFO(kExperts, "<%s>", long_text.c_str());
  const std::string out = testing::internal::GetCapturedStderr();
  EXPECT_NE(out.find(" switchyard INFO EXPERTS <" + long_text + ">\n"), std::string::npos);
  EXPECT_EQ(out.back(), '\n');
  EXPECT_EQ(out.find('\n'), out.size() - 1);
}

}  // namespace
