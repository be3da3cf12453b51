#pragma once
// Writes a file so that readers see either nothing or the whole file.
#include <cstddef>
#include <string>

namespace switchyard {

/// Writes `size` bytes to a temporary file beside `path`, flushes it and
/// renames it onto `path`. On any failure the temporary is removed and
/// Error(kIo) names `path`; an existing file at `path` is left untouched.
void write_file_atomically(const std::string& path, const void* data, std::size_t size);

}  // namespace switchyard
