// Tests of what ends a process (abort, a report on stderr) run it in a child:
// the test binary runs itself (/proc/self/exe) on one hidden test case ("[.]",
// named "child: ..."), with GORO_TEST_CHILD=1 so that a hidden case run by
// hand does nothing, and the parent checks the child's exit status and output.
#pragma once

#include <catch2/catch.hpp>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

extern char** environ;

namespace goro_test {

struct child_result {
    int status = -1;  // as from waitpid
    std::string out, err;

    bool exited_ok() const { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }
    bool aborted() const { return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT; }
    std::string describe() const {
        std::ostringstream s;
        if (WIFEXITED(status)) s << "exit status " << WEXITSTATUS(status);
        else if (WIFSIGNALED(status)) s << "signal " << WTERMSIG(status);
        s << "\n--- stdout ---\n" << out << "\n--- stderr ---\n" << err;
        return s.str();
    }
};

inline std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

/// Runs this test binary on the hidden test case `name`, with `env` added.
inline child_result run_child(const std::string& name, std::vector<std::string> env = {}) {
    const char* tmp = std::getenv("TMPDIR");
    std::string dir = tmp && *tmp ? tmp : "/tmp";
    std::string out_path = dir + "/goro_child_out_XXXXXX", err_path = dir + "/goro_child_err_XXXXXX";
    int out_fd = mkstemp(out_path.data());
    int err_fd = mkstemp(err_path.data());
    REQUIRE(out_fd >= 0);
    REQUIRE(err_fd >= 0);

    env.push_back("GORO_TEST_CHILD=1");
    for (char** e = environ; *e; ++e) env.emplace_back(*e);  // later duplicates lose: ours come first
    std::vector<char*> envp;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::string exe = "/proc/self/exe", arg = name;
    char* argv[] = {exe.data(), arg.data(), nullptr};

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, exe.c_str(), &fa, nullptr, argv, envp.data());
    posix_spawn_file_actions_destroy(&fa);
    REQUIRE(rc == 0);
    child_result r;
    while (waitpid(pid, &r.status, 0) < 0) {
    }
    close(out_fd);
    close(err_fd);
    r.out = slurp(out_path);
    r.err = slurp(err_path);
    unlink(out_path.c_str());
    unlink(err_path.c_str());
    return r;
}

inline bool in_child() { return std::getenv("GORO_TEST_CHILD") != nullptr; }

/// In a child that is expected to abort: Catch2's own SIGABRT handler (and
/// the sanitizers' deferral of signals into it) would turn the abort into
/// something else.
inline void default_abort_action() { std::signal(SIGABRT, SIG_DFL); }

inline bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

}  // namespace goro_test
