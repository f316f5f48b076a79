// Tests for goro/http/prometheus.hpp: the Prometheus text writer.

#include <goro/http/prometheus.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

// Each test file keeps its names to itself: the suite may be built as one
// translation unit of several files (meson's unity build, in CI).
namespace tests_prometheus {

TEST_CASE("prometheus text writer", "[prometheus]") {
    using goro::detail::metric_type;
    std::string out;
    goro::detail::prometheus_text_writer w(out);
    w.family("goro_goroutines", metric_type::gauge, "Goroutines that exist.\nBack\\slash");
    w.sample("goro_goroutines", 12);
    w.family("goro_tasks", metric_type::gauge, "Tasks by state.");
    w.sample("goro_tasks", {{"state", "waiting"}, {"reason", "chan \"re\\cv\"\n"}}, std::uint64_t{7});
    w.family("goro_ratio", metric_type::untyped, "r");
    w.sample("goro_ratio", 0.25);
    w.sample("goro_ratio", {{"k", "nan"}}, std::nan(""));
    w.sample("goro_ratio", {{"k", "inf"}}, -HUGE_VAL);
    std::vector<goro::detail::prometheus_text_writer::label> labels{{"a", "b"}};
    w.sample("goro_ratio", labels, true);
    CHECK(out ==
          "# HELP goro_goroutines Goroutines that exist.\\nBack\\\\slash\n"
          "# TYPE goro_goroutines gauge\n"
          "goro_goroutines 12\n"
          "# HELP goro_tasks Tasks by state.\n"
          "# TYPE goro_tasks gauge\n"
          "goro_tasks{state=\"waiting\",reason=\"chan \\\"re\\\\cv\\\"\\n\"} 7\n"
          "# HELP goro_ratio r\n"
          "# TYPE goro_ratio untyped\n"
          "goro_ratio 0.25\n"
          "goro_ratio{k=\"nan\"} NaN\n"
          "goro_ratio{k=\"inf\"} -Inf\n"
          "goro_ratio{a=\"b\"} 1\n");
    CHECK_THROWS_AS(w.family("goro_tasks", metric_type::gauge, "again"), std::invalid_argument);
    CHECK_THROWS_AS(w.family("1bad", metric_type::gauge, ""), std::invalid_argument);
    CHECK_THROWS_AS(w.sample("bad-name", 1), std::invalid_argument);
    CHECK_THROWS_AS(w.sample("ok", {{"__reserved", "x"}}, 1), std::invalid_argument);
    CHECK_THROWS_AS(w.sample("ok", {{"a:b", "x"}}, 1), std::invalid_argument);
    CHECK(goro::detail::prometheus_content_type == "text/plain; version=0.0.4; charset=utf-8");
}

}  // namespace tests_prometheus
