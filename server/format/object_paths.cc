#include "server/format/object_paths.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace persistd {
namespace {

// The length of the UTF-8 sequence at s[i], or 0 when it is not a valid
// one (overlong forms, surrogates and code points past U+10FFFF included:
// a path must be valid UTF-8 to travel in a protobuf string).
size_t Utf8Sequence(absl::string_view s, size_t i) {
  const uint8_t c = static_cast<uint8_t>(s[i]);
  if (c < 0x80) return 1;
  size_t n;
  uint32_t cp;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
    cp = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    cp = c & 0x0f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (s.size() - i < n) return 0;
  for (size_t k = 1; k < n; ++k) {
    const uint8_t d = static_cast<uint8_t>(s[i + k]);
    if ((d & 0xc0) != 0x80) return 0;
    cp = cp << 6 | (d & 0x3f);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
      (cp >= 0xd800 && cp <= 0xdfff)) {
    return 0;
  }
  return n;
}

// Appends `text` as a double-quoted JSON string; false when the unpickler
// would not decode it to this str (see KeyText::Encoding).
bool AppendQuoted(absl::string_view text, KeyText::Encoding encoding,
                  std::string* out) {
  out->push_back('"');
  for (size_t i = 0; i < text.size();) {
    const char c = text[i];
    const uint8_t u = static_cast<uint8_t>(c);
    if (u >= 0x80) {
      if (encoding != KeyText::kUtf8) return false;
      const size_t n = Utf8Sequence(text, i);
      if (n == 0) return false;
      out->append(text.data() + i, n);
      i += n;
      continue;
    }
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        if (encoding == KeyText::kAsciiUnescaped) return false;
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\t':
        out->append("\\t");
        break;
      case '\r':
        out->append("\\r");
        break;
      default:
        if (u < 0x20 || u == 0x7f) {
          absl::StrAppendFormat(out, "\\u%04x", u);
        } else {
          out->push_back(c);
        }
        break;
    }
    ++i;
  }
  out->push_back('"');
  return true;
}

// Whether `key` is a Python identifier as far as ASCII goes; other
// characters (valid UTF-8) are taken to be letters, since the pickler wrote
// a real attribute.
bool IsIdentifier(absl::string_view key, KeyText::Encoding encoding) {
  if (key.empty() || (key[0] >= '0' && key[0] <= '9')) return false;
  for (size_t i = 0; i < key.size();) {
    const char c = key[i];
    if (static_cast<uint8_t>(c) >= 0x80) {
      const size_t n =
          encoding == KeyText::kUtf8 ? Utf8Sequence(key, i) : size_t{0};
      if (n == 0) return false;
      i += n;
      continue;
    }
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_')) {
      return false;
    }
    ++i;
  }
  return true;
}

}  // namespace

ObjectPaths::ObjectPaths(MemoryBudget* budget)
    : budget_(budget), share_(budget->limit() / kShareDivisor) {
  budget_->set_spare(this);
}

ObjectPaths::~ObjectPaths() {
  if (enabled_) budget_->set_spare(nullptr);
}

void ObjectPaths::Release() {
  // The vectors' and the map's memory really goes: swap with empty ones.
  std::vector<Node>().swap(nodes_);
  std::vector<uint32_t>().swap(array_nodes_);
  std::vector<uint32_t>().swap(memo_slots_);
  std::vector<PathMemo>().swap(memo_entries_);
  std::unordered_map<uint64_t, PathMemo>().swap(memo_sparse_);
  budget_->Refund(charged_);
  charged_ = 0;
  root_ = 0;
  if (enabled_) budget_->set_spare(nullptr);
  enabled_ = false;
}

template <typename T>
bool ObjectPaths::Grow(std::vector<T>* v) {
  if (v->size() < v->capacity()) return true;
  const uint64_t before = budget_->used();
  const uint64_t capacity = v->capacity() * sizeof(T);
  if (charged_ + std::max<uint64_t>(2 * capacity, 16 * sizeof(T)) > share_ ||
      !ReserveCharged(budget_, v, v->size() + 1, /*spare=*/true)) {
    Release();
    return false;
  }
  charged_ += budget_->used() - before;
  return true;
}

uint32_t ObjectPaths::NewNode() {
  if (!enabled_ || nodes_.size() >= UINT32_MAX - 1 || !Grow(&nodes_)) {
    return 0;
  }
  nodes_.emplace_back();
  return static_cast<uint32_t>(nodes_.size());
}

uint32_t ObjectPaths::NewArray() {
  if (!enabled_) return 0;
  const uint32_t node = NewNode();
  if (node == 0 || !Grow(&array_nodes_)) return 0;
  array_nodes_.push_back(node);
  return node;
}

uint32_t ObjectPaths::NodeOf(uint32_t* node) {
  if (*node == 0 || *node > nodes_.size()) *node = NewNode();
  return *node;
}

void ObjectPaths::Put(uint32_t child, uint32_t parent, const PathStep& step) {
  if (!enabled_ || child == 0 || parent == 0 || child > nodes_.size() ||
      parent > nodes_.size()) {
    return;  // tags may outlive a release: their nodes are gone
  }
  Node& node = nodes_[child - 1];
  if (node.parent != 0) return;
  if (step.kind == PathStep::kStrKey &&
      (step.text.size > kMaxKeyBytes)) {
    return;
  }
  node.parent = parent;
  node.kind = step.kind;
  switch (step.kind) {
    case PathStep::kStrKey:
      node.value = step.text.offset;
      node.text_size = static_cast<uint16_t>(step.text.size);
      node.encoding = step.text.encoding;
      break;
    case PathStep::kIntKey:
    case PathStep::kIndex:
    case PathStep::kArgIndex:
      node.value = static_cast<uint64_t>(step.number);
      break;
    case PathStep::kDictState:
    case PathStep::kOtherState:
    case PathStep::kArgs:
      break;
  }
}

void ObjectPaths::Memoize(uint64_t index, const PathMemo& memo) {
  if (!enabled_) return;
  if (index < memo_slots_.size() && memo_slots_[index] != 0) {
    memo_entries_[memo_slots_[index] - 1] = memo;
    return;
  }
  // Dense while that at most doubles the slots (the pickler's indices are
  // 0, 1, 2, ...; keys are memoized early), sparse beyond.
  if (index < std::max<uint64_t>(2 * memo_slots_.size(), 4096)) {
    if (index >= memo_slots_.size()) {
      const uint64_t before = budget_->used();
      const size_t size = std::max<size_t>(index + 1, 2 * memo_slots_.size());
      if (charged_ + size * sizeof(uint32_t) > share_ ||
          !ReserveCharged(budget_, &memo_slots_, size, /*spare=*/true)) {
        Release();
        return;
      }
      charged_ += budget_->used() - before;
      memo_slots_.resize(size, 0);
    }
    if (memo_entries_.size() >= UINT32_MAX - 1 || !Grow(&memo_entries_)) {
      Release();
      return;
    }
    memo_entries_.push_back(memo);
    memo_slots_[index] = static_cast<uint32_t>(memo_entries_.size());
    return;
  }
  auto it = memo_sparse_.find(index);
  if (it != memo_sparse_.end()) {
    it->second = memo;
    return;
  }
  constexpr uint64_t kEntry = MemoryBudget::kHashNodeBytes + sizeof(PathMemo);
  if (charged_ + kEntry > share_ || !budget_->TryChargeSpare(kEntry)) {
    Release();
    return;
  }
  charged_ += kEntry;
  memo_sparse_.emplace(index, memo);
}

const PathMemo* ObjectPaths::RecallSparse(uint64_t index) const {
  auto it = memo_sparse_.find(index);
  return it == memo_sparse_.end() ? nullptr : &it->second;
}

bool ObjectPaths::AppendStep(const Node& node, bool attribute,
                             absl::string_view stream, std::string* out) {
  switch (node.kind) {
    case PathStep::kDictState:
      return true;
    case PathStep::kOtherState:
      out->append(".__state__");
      return true;
    case PathStep::kArgs:
      out->append(".__args__");
      return true;
    case PathStep::kArgIndex:
      absl::StrAppend(out, ".__args__[", static_cast<int64_t>(node.value),
                      "]");
      return true;
    case PathStep::kIntKey:
    case PathStep::kIndex:
      absl::StrAppend(out, attribute ? ".__dict__[" : "[",
                      static_cast<int64_t>(node.value), "]");
      return true;
    case PathStep::kStrKey: {
      if (node.value > stream.size() ||
          node.text_size > stream.size() - node.value) {
        return false;
      }
      const absl::string_view key = stream.substr(node.value, node.text_size);
      if (attribute && IsIdentifier(key, node.encoding)) {
        out->push_back('.');
        out->append(key.data(), key.size());
        return true;
      }
      out->append(attribute ? ".__dict__[" : "[");
      if (!AppendQuoted(key, node.encoding, out)) return false;
      out->push_back(']');
      return true;
    }
  }
  return false;
}

std::string ObjectPaths::PathOf(size_t array, absl::string_view stream) const {
  if (!enabled_ || root_ == 0 || array >= array_nodes_.size()) {
    return kUnknownPath;
  }
  // The chain of first places, from the array up to the root.
  std::vector<uint32_t> chain;
  uint32_t at = array_nodes_[array];
  while (at != root_) {
    if (at == 0 || at > nodes_.size() ||
        chain.size() >= static_cast<size_t>(kMaxDepth)) {
      return kUnknownPath;  // not reachable from the value (or a cycle)
    }
    chain.push_back(at);
    at = nodes_[at - 1].parent;
  }
  std::string path;
  bool attribute = false;  // the step before put a dict state
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    const Node& node = nodes_[*it - 1];
    if (!AppendStep(node, attribute, stream, &path) ||
        path.size() > kMaxPathBytes) {
      return kUnknownPath;
    }
    attribute = node.kind == PathStep::kDictState;
  }
  return path;
}

}  // namespace persistd
