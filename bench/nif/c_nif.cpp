// The C baseline of the nif coupling's benchmark (README.md): camlbeam_bench_cnif:echo/1,
// what a careful C programmer writes to walk a term completely and build an equal copy
// with the NIF API, on the normal scheduler that calls it (no dirty scheduler, no yielding).
//
// Every node of the argument is read (enif_term_type, then the enif_get_* of its kind) and
// a new term is made from what was read: integers and floats from their C values, atoms
// from their text (enif_make_existing_atom_len: never a new atom, as camlbeam's answers),
// binaries into a new binary (one memcpy), lists, tuples and maps from their rebuilt
// elements. The walk is iterative: a stack of tasks (one per container) and an array of
// built values, both reused by the scheduler thread from call to call, so depth costs no C
// stack and a call allocates only the terms it returns. The kinds the NIF API cannot take
// apart or build (pids, ports, references, funs, integers beyond 64 bits, bitstrings that
// are not whole bytes, atoms outside Latin-1 on OTP 25) go through enif_term_to_binary and
// enif_binary_to_term, as camlbeam's NIF term source and sink plan to
// (cpp/nif/src/nif_terms.hpp); the benchmark's payloads have none of them.
#include <erl_nif.h>

#include <cstddef>
#include <cstring>
#include <new>
#include <vector>

namespace {

// The scratch of a walk, one per scheduler thread, kept between calls: after the first
// large term a call allocates nothing but the terms it returns.
//
// Every node of the copy has a slot in `slots`; a container's children get consecutive
// slots when the container is visited. A leaf child is copied into its slot at once; a
// container child becomes a task. A container's own task (assemble) is pushed before its
// children's, so it is popped after every one of them is built (the stack is LIFO).
struct Task {
  enum class Op : unsigned char { visit, tuple, list, improper_list, map } op;
  std::size_t count;  // children: elements (improper_list: and the tail last; map: keys, then values)
  std::size_t first;  // slot of the first child
  std::size_t dest;   // slot of this node
  ERL_NIF_TERM term;  // visit: the node
};

struct Scratch {
  std::vector<Task> tasks;
  std::vector<ERL_NIF_TERM> slots;
};

thread_local Scratch scratch;

bool through_etf(ErlNifEnv* env, ERL_NIF_TERM term, ERL_NIF_TERM* out) {
  ErlNifBinary bin;
  if (!enif_term_to_binary(env, term, &bin)) return false;
  const std::size_t used = enif_binary_to_term(env, bin.data, bin.size, out, ERL_NIF_BIN2TERM_SAFE);
  enif_release_binary(&bin);
  return used != 0;
}

bool is_container(ErlNifEnv* env, ERL_NIF_TERM term, ErlNifTermType type) {
  return type == ERL_NIF_TERM_TYPE_TUPLE || type == ERL_NIF_TERM_TYPE_MAP ||
         (type == ERL_NIF_TERM_TYPE_LIST && !enif_is_empty_list(env, term));
}

// A term that is no container: its copy. False for a failure of the VM's (no memory for a
// binary, say); the caller raises.
bool copy_leaf(ErlNifEnv* env, ERL_NIF_TERM term, ErlNifTermType type, ERL_NIF_TERM* out) {
  switch (type) {
    case ERL_NIF_TERM_TYPE_INTEGER: {
      ErlNifSInt64 i;
      if (enif_get_int64(env, term, &i)) {
        *out = enif_make_int64(env, i);
        return true;
      }
      ErlNifUInt64 u;
      if (enif_get_uint64(env, term, &u)) {
        *out = enif_make_uint64(env, u);
        return true;
      }
      return through_etf(env, term, out);  // a bignum
    }
    case ERL_NIF_TERM_TYPE_FLOAT: {
      double d;
      if (!enif_get_double(env, term, &d)) return false;
      *out = enif_make_double(env, d);
      return true;
    }
    case ERL_NIF_TERM_TYPE_ATOM: {
      char text[1024];  // 255 characters, UTF-8 at most 4 bytes each, and the NUL
      const int size = enif_get_atom(env, term, text, sizeof text, ERL_NIF_LATIN1);
      if (size > 0 && enif_make_existing_atom_len(env, text, static_cast<std::size_t>(size - 1), out,
                                                  ERL_NIF_LATIN1)) {
        return true;
      }
      return through_etf(env, term, out);  // not Latin-1 (OTP 25 reads no other)
    }
    case ERL_NIF_TERM_TYPE_BITSTRING: {
      ErlNifBinary bin;
      if (!enif_inspect_binary(env, term, &bin)) return through_etf(env, term, out);  // not whole bytes
      unsigned char* data = enif_make_new_binary(env, bin.size, out);
      if (data == nullptr) return false;
      if (bin.size != 0) std::memcpy(data, bin.data, bin.size);
      return true;
    }
    case ERL_NIF_TERM_TYPE_LIST:  // [] (is_container says no to it)
      *out = enif_make_list(env, 0);
      return true;
    default:  // pid, port, reference, fun
      return through_etf(env, term, out);
  }
}

// A child of a container, into its slot: a leaf at once, a container as a task.
bool child(ErlNifEnv* env, Scratch& s, ERL_NIF_TERM term, std::size_t slot) {
  const ErlNifTermType type = enif_term_type(env, term);
  if (is_container(env, term, type)) {
    s.tasks.push_back({Task::Op::visit, 0, 0, slot, term});
    return true;
  }
  return copy_leaf(env, term, type, &s.slots[slot]);
}

// A container at `dest`: slots for its children, its assemble task, its children.
bool visit(ErlNifEnv* env, Scratch& s, ERL_NIF_TERM term, std::size_t dest) {
  const std::size_t first = s.slots.size();
  switch (enif_term_type(env, term)) {
    case ERL_NIF_TERM_TYPE_TUPLE: {
      int arity;
      const ERL_NIF_TERM* elements;
      if (!enif_get_tuple(env, term, &arity, &elements)) return false;
      const auto count = static_cast<std::size_t>(arity);
      s.slots.resize(first + count);
      s.tasks.push_back({Task::Op::tuple, count, first, dest, 0});
      for (std::size_t i = 0; i < count; ++i) {
        if (!child(env, s, elements[i], first + i)) return false;
      }
      return true;
    }
    case ERL_NIF_TERM_TYPE_LIST: {
      unsigned length;
      const bool proper = enif_get_list_length(env, term, &length);
      const std::size_t at = s.tasks.size();
      s.tasks.push_back({proper ? Task::Op::list : Task::Op::improper_list, 0, first, dest, 0});
      std::size_t count = 0;
      ERL_NIF_TERM head;
      ERL_NIF_TERM tail = term;
      if (proper) s.slots.resize(first + length);
      while (enif_get_list_cell(env, tail, &head, &tail)) {
        if (!proper) s.slots.push_back(0);
        if (!child(env, s, head, first + count)) return false;
        ++count;
      }
      if (!proper) {  // the tail, in the last slot
        s.slots.push_back(0);
        if (!child(env, s, tail, first + count)) return false;
      }
      s.tasks[at].count = count;
      return true;
    }
    case ERL_NIF_TERM_TYPE_MAP: {
      std::size_t size;
      if (!enif_get_map_size(env, term, &size)) return false;
      s.slots.resize(first + 2 * size);
      s.tasks.push_back({Task::Op::map, size, first, dest, 0});
      ErlNifMapIterator it;
      if (!enif_map_iterator_create(env, term, &it, ERL_NIF_MAP_ITERATOR_FIRST)) return false;
      ERL_NIF_TERM key;
      ERL_NIF_TERM value;
      bool ok = true;
      for (std::size_t i = 0; ok && i < size && enif_map_iterator_get_pair(env, &it, &key, &value); ++i) {
        ok = child(env, s, key, first + i) && child(env, s, value, first + size + i);
        enif_map_iterator_next(env, &it);
      }
      enif_map_iterator_destroy(env, &it);
      return ok;
    }
    default:
      return false;
  }
}

// A container from its built children.
bool assemble(ErlNifEnv* env, Scratch& s, const Task& task) {
  ERL_NIF_TERM* children = s.slots.data() + task.first;
  ERL_NIF_TERM& out = s.slots[task.dest];
  switch (task.op) {
    case Task::Op::tuple:
      out = enif_make_tuple_from_array(env, children, static_cast<unsigned>(task.count));
      return true;
    case Task::Op::list:
      out = enif_make_list_from_array(env, children, static_cast<unsigned>(task.count));
      return true;
    case Task::Op::improper_list: {
      ERL_NIF_TERM list = children[task.count];
      for (std::size_t i = task.count; i-- > 0;) list = enif_make_list_cell(env, children[i], list);
      out = list;
      return true;
    }
    case Task::Op::map:
      return enif_make_map_from_arrays(env, children, children + task.count, task.count, &out) != 0;
    case Task::Op::visit:
      break;
  }
  return false;
}

bool copy(ErlNifEnv* env, ERL_NIF_TERM term, ERL_NIF_TERM* out) {
  const ErlNifTermType type = enif_term_type(env, term);
  if (!is_container(env, term, type)) return copy_leaf(env, term, type, out);  // int42: no stack at all
  Scratch& s = scratch;
  s.tasks.clear();
  s.slots.assign(1, 0);  // slot 0: the copy of `term`
  if (!visit(env, s, term, 0)) return false;
  while (!s.tasks.empty()) {
    const Task task = s.tasks.back();
    s.tasks.pop_back();
    const bool ok = task.op == Task::Op::visit ? visit(env, s, task.term, task.dest) : assemble(env, s, task);
    if (!ok) return false;
  }
  *out = s.slots[0];
  return true;
}

ERL_NIF_TERM echo(ErlNifEnv* env, int /*argc*/, const ERL_NIF_TERM argv[]) {
  try {
    ERL_NIF_TERM out;
    if (copy(env, argv[0], &out)) return out;
    return enif_raise_exception(env, enif_make_atom(env, "echo_failed"));
  } catch (const std::bad_alloc&) {
    return enif_raise_exception(env, enif_make_atom(env, "enomem"));
  }
}

ErlNifFunc functions[] = {{"echo", 1, echo, 0}};

}  // namespace

ERL_NIF_INIT(camlbeam_bench_cnif, functions, nullptr, nullptr, nullptr, nullptr)
