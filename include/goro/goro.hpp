// goro/goro.hpp — everything goro offers, in one include.
//
// The layers, bottom to top; a header includes only headers of its own layer
// or of the layers below it (sync/ and inspect/ sit side by side and never
// include each other). One exception: core/go.hpp, where tasks start, includes
// inspect/panic.hpp and inspect/deadlock.hpp, so that the crash report and the
// deadlock report are there in every program that starts a task, whatever
// else it includes.
//
//   core/     platform, spinlock, pool, timer, frame, registry, scheduler,
//             task, go, stack: tasks on the worker pool, and their registry
//   sync/     channel, select, context, wait_group, mutex, semaphore, errgroup
//   inspect/  snapshot, pprof, dump, panic, leak_check, deadlock
//   http/     request, response, prometheus, address, server, routes,
//             debug_server: /debug/pprof/goroutine, /metrics, /debug/goro/…
//   io/       poller: the netpoller, wait_readable / wait_writable, io_error
//   net/      address, resolve, tcp (listener, stream), udp (udp_socket)
//
// goro/core.hpp is the same without http/, io/ and net/ (and is cheaper to compile); the
// test-framework integrations goro/catch2.hpp and goro/gtest.hpp are separate.
#pragma once

#include <goro/core.hpp>
#include <goro/inspect/leak_watch.hpp>
#include <goro/inspect/block_profile.hpp>
#include <goro/http/debug_server.hpp>
#include <goro/io/poller.hpp>
#include <goro/net/address.hpp>
#include <goro/net/resolve.hpp>
#include <goro/net/tcp.hpp>
#include <goro/net/udp.hpp>
