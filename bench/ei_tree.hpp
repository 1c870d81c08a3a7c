// The libei baseline of the round-trip benchmark (conv_bench): ETF bytes decoded with
// ei_decode_* into a plain C tree, and that tree re-encoded with ei_x_encode_*.
//
// This is the tree a careful C programmer would write on top of libei, no more and no
// less: one tagged 24-byte node per term, containers own a malloc'd array of their
// children (nodes stored inline, not pointers), every atom, binary and string is copied
// into its own malloc'd buffer (ei_decode_binary / ei_decode_string / ei_decode_atom_as,
// the copying APIs: the tree must outlive the input buffer, as Erl.Term.t and etf::Term
// do), and decode, encode and free are iterative with explicit stacks kept by the caller
// between calls, because the payloads include a 10,000-deep term. Building and freeing the
// tree are both part of what is timed, as allocating and collecting Erl.Term.t is.
//
// Covered: integers that fit 64 bits, floats, atoms, binaries, bitstrings, STRING_EXT
// (kept as one string node, as libei hands it over), proper and improper lists, tuples,
// maps. Anything else (bignums beyond 64 bits, pids, ports, references, funs) is refused,
// which makes conv_bench --check fail for a payload that would need it.
#pragma once

#include <ei.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace camlbeam::bench {

static_assert(sizeof(long) == 8, "ei_decode_long/ei_x_encode_long must carry 64-bit integers");

struct EiNode {
  enum class Kind : std::uint8_t { nil = 0, integer, float64, atom, binary, bitstring, string, list, tuple, map };
  struct Bytes {
    char* data;        // malloc'd copy; atoms and strings are NUL-terminated
    std::size_t size;  // bytes (bitstrings: bytes holding the bits)
  };
  struct Children {
    EiNode* items;      // malloc'd array, inline nodes
    std::size_t count;  // tuple: arity; map: 2 * size (key, value, ...); list: elements + the tail
  };

  Kind kind = Kind::nil;
  std::uint8_t bits = 0;  // bitstring: bits used in the last byte (1..7)
  union {
    long integer;
    double float64;
    Bytes bytes;
    Children children;
  };

  EiNode() : integer(0) {}
  bool owns_bytes() const noexcept {
    return kind == Kind::atom || kind == Kind::binary || kind == Kind::bitstring || kind == Kind::string;
  }
  bool is_container() const noexcept { return kind == Kind::list || kind == Kind::tuple || kind == Kind::map; }
};
static_assert(sizeof(EiNode) == 24);

// The stacks, reused between calls as a long-lived C-node would keep them.
struct EiTreeScratch {
  struct DecodeFrame {
    EiNode* node;  // the container being filled
    std::size_t next;
  };
  struct EncodeFrame {
    const EiNode* node;
    std::size_t next;
  };
  std::vector<DecodeFrame> decode;
  std::vector<EncodeFrame> encode;
  std::vector<EiNode::Children> free;
};

// Frees everything `root` owns (not root itself) and leaves it nil. The stack holds
// children arrays, copied out of their nodes: a node lives in its parent's array, which is
// freed as soon as its own children have been looked at.
inline void ei_tree_free(EiNode& root, EiTreeScratch& scratch) {
  auto& stack = scratch.free;
  stack.clear();
  if (root.owns_bytes()) std::free(root.bytes.data);
  else if (root.is_container() && root.children.count != 0) stack.push_back(root.children);
  while (!stack.empty()) {
    const EiNode::Children array = stack.back();
    stack.pop_back();
    for (std::size_t i = 0; i < array.count; ++i) {
      const EiNode& c = array.items[i];
      if (c.owns_bytes()) std::free(c.bytes.data);
      else if (c.is_container() && c.children.count != 0) stack.push_back(c.children);
    }
    std::free(array.items);
  }
  root.kind = EiNode::Kind::nil;
}

namespace detail {

inline bool ei_alloc_children(EiNode& node, EiNode::Kind kind, std::size_t count) {
  node.kind = kind;
  node.children.count = count;
  node.children.items = static_cast<EiNode*>(std::malloc(count * sizeof(EiNode)));
  if (node.children.items == nullptr) {
    node.kind = EiNode::Kind::nil;
    return false;
  }
  return true;
}

inline char* ei_alloc_bytes(EiNode& node, std::size_t size) {
  node.bytes.data = static_cast<char*>(std::malloc(size == 0 ? 1 : size));
  node.bytes.size = size;
  return node.bytes.data;
}

// Decodes the term at *index into `node` (nothing owned on failure). Containers get their
// children array, still to be filled; the caller pushes them.
inline bool ei_decode_node(const char* buf, int* index, EiNode& node) {
  using Kind = EiNode::Kind;
  int type = 0;
  int size = 0;
  if (ei_get_type(buf, index, &type, &size) < 0) return false;
  switch (type) {
    case ERL_SMALL_INTEGER_EXT:
    case ERL_INTEGER_EXT:
    case ERL_SMALL_BIG_EXT:
    case ERL_LARGE_BIG_EXT:
      node.kind = Kind::integer;
      return ei_decode_long(buf, index, &node.integer) == 0;  // beyond 64 bits: refused
    case ERL_FLOAT_EXT:
    case NEW_FLOAT_EXT:
      node.kind = Kind::float64;
      return ei_decode_double(buf, index, &node.float64) == 0;
    case ERL_ATOM_EXT:
    case ERL_SMALL_ATOM_EXT:
    case ERL_ATOM_UTF8_EXT:
    case ERL_SMALL_ATOM_UTF8_EXT: {
      // libei decodes atoms only by copying into a caller's buffer; the tree keeps its own.
      char name[MAXATOMLEN_UTF8];
      erlang_char_encoding was{};
      erlang_char_encoding got{};
      if (ei_decode_atom_as(buf, index, name, sizeof name, ERLANG_UTF8, &was, &got) < 0) return false;
      const std::size_t len = std::strlen(name);
      char* copy = ei_alloc_bytes(node, len + 1);
      if (copy == nullptr) return false;
      std::memcpy(copy, name, len + 1);
      node.bytes.size = len;
      node.kind = Kind::atom;
      return true;
    }
    case ERL_BINARY_EXT: {
      char* data = ei_alloc_bytes(node, static_cast<std::size_t>(size));
      if (data == nullptr) return false;
      long len = 0;
      if (ei_decode_binary(buf, index, data, &len) < 0) {
        std::free(data);
        return false;
      }
      node.kind = Kind::binary;
      return true;
    }
    case ERL_BIT_BINARY_EXT: {
      const char* p = nullptr;
      unsigned int bit_offset = 0;
      std::size_t bits = 0;
      if (ei_decode_bitstring(buf, index, &p, &bit_offset, &bits) < 0 || bit_offset != 0) return false;
      const std::size_t bytes = (bits + 7) / 8;
      char* data = ei_alloc_bytes(node, bytes);
      if (data == nullptr) return false;
      std::memcpy(data, p, bytes);
      node.kind = bits % 8 == 0 ? Kind::binary : Kind::bitstring;
      node.bits = static_cast<std::uint8_t>(bits % 8);
      return true;
    }
    case ERL_STRING_EXT: {
      char* data = ei_alloc_bytes(node, static_cast<std::size_t>(size) + 1);
      if (data == nullptr) return false;
      if (ei_decode_string(buf, index, data) < 0) {
        std::free(data);
        return false;
      }
      node.bytes.size = static_cast<std::size_t>(size);
      node.kind = Kind::string;
      return true;
    }
    case ERL_NIL_EXT:
    case ERL_LIST_EXT: {
      int n = 0;
      if (ei_decode_list_header(buf, index, &n) < 0) return false;
      if (n == 0) {
        node.kind = Kind::nil;
        return true;
      }
      return ei_alloc_children(node, Kind::list, std::size_t(n) + 1);  // the tail is a child
    }
    case ERL_SMALL_TUPLE_EXT:
    case ERL_LARGE_TUPLE_EXT: {
      int n = 0;
      if (ei_decode_tuple_header(buf, index, &n) < 0) return false;
      if (n == 0) {
        node.kind = Kind::tuple;
        node.children = {nullptr, 0};
        return true;
      }
      return ei_alloc_children(node, Kind::tuple, static_cast<std::size_t>(n));
    }
    case ERL_MAP_EXT: {
      int n = 0;
      if (ei_decode_map_header(buf, index, &n) < 0) return false;
      if (n == 0) {
        node.kind = Kind::map;
        node.children = {nullptr, 0};
        return true;
      }
      return ei_alloc_children(node, Kind::map, 2 * static_cast<std::size_t>(n));
    }
    default:
      return false;
  }
}

}  // namespace detail

// Decodes one external term (version byte included) into `root`, which must be nil (a new
// node or one ei_tree_free left). On failure returns false and `root` owns nothing.
// `*end` is the index after the term.
inline bool ei_tree_decode(const char* buf, EiNode& root, EiTreeScratch& scratch, int* end = nullptr) {
  auto& stack = scratch.decode;
  stack.clear();
  int index = 0;
  int version = 0;
  if (ei_decode_version(buf, &index, &version) < 0) return false;
  EiNode* target = &root;
  for (;;) {
    target->kind = EiNode::Kind::nil;
    if (!detail::ei_decode_node(buf, &index, *target)) {
      // Keep only what is complete: the failed node owns nothing, open containers end
      // before their unfilled children.
      target->kind = EiNode::Kind::nil;
      for (const auto& f : stack) f.node->children.count = f.next;
      ei_tree_free(root, scratch);
      return false;
    }
    if (target->is_container() && target->children.count != 0) stack.push_back({target, 0});
    for (;;) {
      if (stack.empty()) {
        if (end != nullptr) *end = index;
        return true;
      }
      auto& top = stack.back();
      if (top.next < top.node->children.count) {
        target = &top.node->children.items[top.next++];
        break;
      }
      stack.pop_back();
    }
  }
}

// Appends `root` to x (the caller writes the version byte). Atoms go out as UTF-8, so the
// bytes equal term_to_binary(T, [{minor_version, 2}]). False when libei fails.
inline bool ei_tree_encode(ei_x_buff& x, const EiNode& root, EiTreeScratch& scratch) {
  using Kind = EiNode::Kind;
  auto& stack = scratch.encode;
  stack.clear();
  const EiNode* node = &root;
  for (;;) {
    int rc = 0;
    switch (node->kind) {
      case Kind::nil: rc = ei_x_encode_empty_list(&x); break;
      case Kind::integer: rc = ei_x_encode_long(&x, node->integer); break;
      case Kind::float64: rc = ei_x_encode_double(&x, node->float64); break;
      case Kind::atom:
        rc = ei_x_encode_atom_len_as(&x, node->bytes.data, static_cast<int>(node->bytes.size), ERLANG_UTF8,
                                     ERLANG_UTF8);
        break;
      case Kind::binary: rc = ei_x_encode_binary(&x, node->bytes.data, static_cast<int>(node->bytes.size)); break;
      case Kind::bitstring:
        rc = ei_x_encode_bitstring(&x, node->bytes.data, 0, (node->bytes.size - 1) * 8 + node->bits);
        break;
      case Kind::string:
        rc = ei_x_encode_string_len(&x, node->bytes.data, static_cast<int>(node->bytes.size));
        break;
      case Kind::list: rc = ei_x_encode_list_header(&x, static_cast<long>(node->children.count - 1)); break;
      case Kind::tuple: rc = ei_x_encode_tuple_header(&x, static_cast<long>(node->children.count)); break;
      case Kind::map: rc = ei_x_encode_map_header(&x, static_cast<long>(node->children.count / 2)); break;
    }
    if (rc < 0) return false;
    if (node->is_container() && node->children.count != 0) stack.push_back({node, 0});
    for (;;) {
      if (stack.empty()) return true;
      auto& top = stack.back();
      if (top.next < top.node->children.count) {
        node = &top.node->children.items[top.next++];
        break;
      }
      stack.pop_back();
    }
  }
}

}  // namespace camlbeam::bench
