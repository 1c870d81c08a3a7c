// RAII for the NIF API's own handles.
#pragma once

#include <erl_nif.h>

#include <cstring>
#include <new>
#include <string_view>
#include <utility>

namespace camlbeam::nif {

// A process-independent environment (enif_alloc_env): the terms of one request and its
// answer, which outlive the NIF call that made them and are read on the OCaml thread.
class OwnedEnv {
 public:
  OwnedEnv() : env_(enif_alloc_env()) {
    if (env_ == nullptr) throw std::bad_alloc();
  }
  ~OwnedEnv() {
    if (env_ != nullptr) enif_free_env(env_);
  }
  OwnedEnv(OwnedEnv&& other) noexcept : env_(std::exchange(other.env_, nullptr)) {}
  OwnedEnv& operator=(OwnedEnv&& other) noexcept {
    std::swap(env_, other.env_);
    return *this;
  }
  OwnedEnv(const OwnedEnv&) = delete;
  OwnedEnv& operator=(const OwnedEnv&) = delete;

  ErlNifEnv* get() const noexcept { return env_; }

 private:
  ErlNifEnv* env_;
};

// A new binary term holding `text`.
inline ERL_NIF_TERM make_binary(ErlNifEnv* env, std::string_view text) {
  ERL_NIF_TERM term;
  unsigned char* bytes = enif_make_new_binary(env, text.size(), &term);
  if (bytes == nullptr) throw std::bad_alloc();
  if (!text.empty()) std::memcpy(bytes, text.data(), text.size());
  return term;
}

}  // namespace camlbeam::nif
