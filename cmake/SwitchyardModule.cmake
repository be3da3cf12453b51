# switchyard_module(NAME SOURCES... DEPS...) — one library target per top-level
# folder with a public include tree (NAME/include) and private sources.
function(switchyard_module name)
  cmake_parse_arguments(ARG "" "" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(switchyard_${name} ${ARG_SOURCES})
  add_library(switchyard::${name} ALIAS switchyard_${name})
  set_target_properties(switchyard_${name} PROPERTIES EXPORT_NAME ${name} POSITION_INDEPENDENT_CODE ON)
  target_include_directories(switchyard_${name} PUBLIC
    $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include> $<INSTALL_INTERFACE:include>)
  target_link_libraries(switchyard_${name} PUBLIC ${ARG_PUBLIC_DEPS} PRIVATE ${ARG_PRIVATE_DEPS}
    $<BUILD_INTERFACE:switchyard_warnings>)
  install(TARGETS switchyard_${name} EXPORT SwitchyardTargets ARCHIVE DESTINATION lib LIBRARY DESTINATION lib)
  install(DIRECTORY include/ DESTINATION include)
endfunction()
