// The C++ half of erl_node.ml: the Erl.Private.context camlbeam-node runs its requests in,
// and the externals behind its Erl.send and Erl.call_erlang, which reach the Node that
// serves.
#pragma once

#include "node.hpp"

#include <camlbeam/conv/conv.hpp>
#include <camlbeam/host/runtime.hpp>

namespace camlbeam::node {

// The context of the node's requests, Erl.self () being `node`'s ocaml process and
// (Erl.worker ()).id `worker_id`. Call on the runtime thread. Throws host::RuntimeError when erl_node.ml is not linked in. While
// the result lives, `node` must: its externals reach it.
conv::Root make_ocaml_context(Node& node, const host::Runtime& runtime, std::uint32_t worker_id);

}  // namespace camlbeam::node
