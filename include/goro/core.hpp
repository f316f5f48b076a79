// goro/core.hpp — tasks, channels, select, contexts, the rest of sync, and
// dump_goroutines(): what a program that uses goro needs, without the debug
// server (goro/goro.hpp adds it). The leak watch (inspect/leak_watch.hpp) and
// the block profile (inspect/block_profile.hpp) are in goro/goro.hpp, not here:
// include them by name to have them without the server.
#pragma once

#include <goro/version.hpp>
#include <goro/core/platform.hpp>
#include <goro/core/frame.hpp>
#include <goro/core/registry.hpp>
#include <goro/core/task.hpp>
#include <goro/core/timer.hpp>
#include <goro/core/scheduler.hpp>
#include <goro/core/foreign.hpp>
#include <goro/core/go.hpp>
#include <goro/core/spawn.hpp>
#include <goro/core/stack.hpp>
#include <goro/sync/channel.hpp>
#include <goro/sync/select.hpp>
#include <goro/sync/select_dynamic.hpp>
#include <goro/sync/context.hpp>
#include <goro/sync/wait_group.hpp>
#include <goro/sync/mutex.hpp>
#include <goro/sync/semaphore.hpp>
#include <goro/sync/errgroup.hpp>
#include <goro/sync/when.hpp>
#include <goro/sync/once.hpp>
#include <goro/sync/rw_mutex.hpp>
#include <goro/sync/cond.hpp>
#include <goro/sync/ticker.hpp>
#include <goro/inspect/snapshot.hpp>
#include <goro/inspect/pprof.hpp>
#include <goro/inspect/dump.hpp>
#include <goro/inspect/leak_check.hpp>
#include <goro/inspect/deadlock.hpp>
#include <goro/inspect/panic.hpp>
#include <goro/io/blocking.hpp>
