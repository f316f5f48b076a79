// The test runner's main. The suite wants several workers even on a one-core
// machine (stealing and stop-the-world need more than one), so unless
// GORO_MAXPROCS says otherwise the pool gets at least four.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <thread>

#include <goro/goro.hpp>
#include <goro/catch2.hpp>

// Every test case must leave no task behind (goleak's check, per test).
GORO_CATCH2_LEAK_CHECK();

int main(int argc, char** argv) {
    if (!std::getenv("GORO_MAXPROCS"))
        goro::set_max_procs(std::max(4u, std::thread::hardware_concurrency()));
    return Catch::Session().run(argc, argv);
}
