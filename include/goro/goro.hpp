// goro/goro.hpp — everything goro offers, in one include.
//
// Layers, bottom to top (a header includes only the ones below it):
//   platform, pool, frame, task, registry, timer, scheduler, go, stack
//   channel, select, context, wait_group, mutex, semaphore, errgroup
//   snapshot, pprof, dump, leak_check, deadlock, panic
//   debug_server
// Test-framework integrations are separate: goro/catch2.hpp, goro/gtest.hpp.
#pragma once

#include <goro/version.hpp>
#include <goro/platform.hpp>
#include <goro/frame.hpp>
#include <goro/registry.hpp>
#include <goro/task.hpp>
#include <goro/timer.hpp>
#include <goro/scheduler.hpp>
#include <goro/go.hpp>
#include <goro/stack.hpp>
#include <goro/channel.hpp>
#include <goro/select.hpp>
#include <goro/context.hpp>
#include <goro/wait_group.hpp>
#include <goro/mutex.hpp>
#include <goro/semaphore.hpp>
#include <goro/errgroup.hpp>
#include <goro/snapshot.hpp>
#include <goro/pprof.hpp>
#include <goro/dump.hpp>
#include <goro/leak_check.hpp>
#include <goro/deadlock.hpp>
#include <goro/panic.hpp>
#include <goro/debug_server.hpp>
