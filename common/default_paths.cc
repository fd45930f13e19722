#include "common/default_paths.h"

#include <stdlib.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace persistd {

namespace {

std::string Env(const char* name) {
  const char* value = ::getenv(name);
  return value == nullptr ? "" : value;
}

}  // namespace

std::string DefaultSocketPath() {
  if (!Env("PERSISTD_SOCKET").empty()) return Env("PERSISTD_SOCKET");
  if (!Env("XDG_RUNTIME_DIR").empty()) {
    return Env("XDG_RUNTIME_DIR") + "/persistd.sock";
  }
  return absl::StrCat("/tmp/persistd-", ::getuid(), "/persistd.sock");
}

std::string DefaultStoreDir() {
  if (!Env("PERSISTD_STORE").empty()) return Env("PERSISTD_STORE");
  if (!Env("XDG_DATA_HOME").empty()) return Env("XDG_DATA_HOME") + "/persistd";
  std::string home = Env("HOME").empty() ? "/tmp" : Env("HOME");
  return home + "/.local/share/persistd";
}

}  // namespace persistd
