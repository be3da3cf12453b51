#include "switchyard/runtime/error.hpp"

namespace switchyard {

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "invalid argument";
    case ErrorCode::kIo: return "I/O error";
    case ErrorCode::kMpi: return "MPI error";
    case ErrorCode::kDnnl: return "oneDNN error";
    case ErrorCode::kInternal: return "internal error";
  }
  return "unknown error";
}

}  // namespace switchyard
