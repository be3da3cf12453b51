# SWITCHYARD_SANITIZE: build everything with GCC's sanitizers, for the test
# suite's sanitizer runs (scripts/sanitize.sh). Empty (the default): none.
#   address,undefined   AddressSanitizer (with LeakSanitizer) + UndefinedBehaviorSanitizer
#   thread              ThreadSanitizer
# Every report ends the process (-fno-sanitize-recover=all), so a test fails on
# the first one instead of printing it and passing. -g1: line tables, all a
# report's stack needs, at half the compile and link time of full debug info.
set(SWITCHYARD_SANITIZE "" CACHE STRING "Sanitizers to build with: address,undefined or thread (empty: none)")
set(SWITCHYARD_SANITIZE_FLAGS "")
if(SWITCHYARD_SANITIZE)
  if(NOT SWITCHYARD_SANITIZE MATCHES "^(address,undefined|address|undefined|thread)$")
    message(FATAL_ERROR "SWITCHYARD_SANITIZE: expected address,undefined, address, undefined or thread, "
                        "got '${SWITCHYARD_SANITIZE}'")
  endif()
  set(SWITCHYARD_SANITIZE_FLAGS -fsanitize=${SWITCHYARD_SANITIZE})
  add_compile_options(${SWITCHYARD_SANITIZE_FLAGS} -fno-sanitize-recover=all -fno-omit-frame-pointer -g1)
  add_link_options(${SWITCHYARD_SANITIZE_FLAGS})
  message(STATUS "Switchyard: sanitizers: ${SWITCHYARD_SANITIZE}")
endif()
# For the installed package (Switchyard::switchyard and switchyard.pc): a
# sanitized library needs its runtime linked into whatever uses it.
string(JOIN " " SWITCHYARD_SANITIZE_LINK_FLAGS ${SWITCHYARD_SANITIZE_FLAGS})
