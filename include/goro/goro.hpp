// goro/goro.hpp — everything goro offers, in one include.
#pragma once

#include <goro/platform.hpp>
#include <goro/frame.hpp>
#include <goro/registry.hpp>
#include <goro/task.hpp>
#include <goro/timer.hpp>
#include <goro/scheduler.hpp>
#include <goro/go.hpp>
#include <goro/stack.hpp>
#include <goro/snapshot.hpp>
