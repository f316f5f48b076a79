#ifndef GORO_HTTP_PROMETHEUS_HPP
#define GORO_HTTP_PROMETHEUS_HPP

// detail::prometheus_text_writer: the Prometheus text exposition format 0.0.4,
// as served at /metrics (goro/http/routes.hpp). Pure: writes into a string.

#include <charconv>
#include <cmath>
#include <cstddef>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <goro/core/linkage.hpp>

namespace goro {

namespace detail {

inline constexpr std::string_view prometheus_content_type = "text/plain; version=0.0.4; charset=utf-8";

enum class metric_type { counter, gauge, histogram, summary, untyped };

// Writes metric families into a string:
//
//     std::string out;
//     goro::detail::prometheus_text_writer w(out);
//     w.family("goro_goroutines", goro::detail::metric_type::gauge, "Goroutines that exist.");
//     w.sample("goro_goroutines", 12);
//     w.family("goro_tasks", goro::detail::metric_type::gauge, "Tasks by state.");
//     w.sample("goro_tasks", {{"state", "waiting"}}, 7);
//
// Names are checked (metric: [a-zA-Z_:][a-zA-Z0-9_:]*, label:
// [a-zA-Z_][a-zA-Z0-9_]* not starting with "__"); a bad name or a family
// written twice throws std::invalid_argument, since it is a programming error
// and Prometheus would reject the whole scrape. HELP text and label values are
// escaped. Integers are written exactly, floating values shortest-round-trip,
// NaN and infinities as NaN, +Inf, -Inf.
class prometheus_text_writer {
public:
    using label = std::pair<std::string_view, std::string_view>;

    explicit prometheus_text_writer(std::string& out) : out_(out) {}

    void family(std::string_view name, metric_type type, std::string_view help);

    template <class T>
        requires std::is_arithmetic_v<T>
    void sample(std::string_view name, T value) {
        sample(name, std::span<const label>{}, value);
    }

    template <class T>
        requires std::is_arithmetic_v<T>
    void sample(std::string_view name, std::initializer_list<label> labels, T value) {
        sample(name, std::span<const label>(labels.begin(), labels.size()), value);
    }

    template <class T>
        requires std::is_arithmetic_v<T>
    void sample(std::string_view name, std::span<const label> labels, T value) {
        check_metric_name(name);
        out_ += name;
        if (!labels.empty()) {
            out_ += '{';
            bool first = true;
            for (const auto& [k, v] : labels) {
                check_label_name(k);
                if (!first) out_ += ',';
                first = false;
                out_ += k;
                out_ += "=\"";
                for (char c : v) {
                    if (c == '\\') out_ += "\\\\";
                    else if (c == '"') out_ += "\\\"";
                    else if (c == '\n') out_ += "\\n";
                    else out_.push_back(c);
                }
                out_ += '"';
            }
            out_ += '}';
        }
        out_ += ' ';
        append_value(value);
        out_ += '\n';
    }

private:
    static std::string_view type_name(metric_type t) noexcept;
    static bool name_char(char c, bool first, bool colon_ok) noexcept;
    static void check_metric_name(std::string_view n);
    static void check_label_name(std::string_view n);
    template <class T>
    void append_value(T value) {
        if constexpr (std::is_same_v<T, bool>) {
            out_ += value ? '1' : '0';
        } else if constexpr (std::is_integral_v<T>) {
            char buf[32];
            auto r = std::to_chars(buf, buf + sizeof buf, value);
            out_.append(buf, r.ptr);
        } else {
            double d = static_cast<double>(value);
            if (std::isnan(d)) { out_ += "NaN"; return; }
            if (std::isinf(d)) { out_ += d > 0 ? "+Inf" : "-Inf"; return; }
            char buf[64];
            auto r = std::to_chars(buf, buf + sizeof buf, d);
            out_.append(buf, r.ptr);
        }
    }

    std::string& out_;
    std::vector<std::string> families_;
};

}  // namespace detail

}  // namespace goro

#if GORO_BODIES

#include <algorithm>
#include <stdexcept>

namespace goro::detail {

GORO_DECL void prometheus_text_writer::family(std::string_view name, metric_type type, std::string_view help) {
    check_metric_name(name);
    for (const auto& f : families_)
        if (f == name)
            throw std::invalid_argument("goro::detail::prometheus_text_writer: family '" +
                                        std::string(name) + "' written twice");
    families_.emplace_back(name);
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    for (char c : help) {
        if (c == '\\') out_ += "\\\\";
        else if (c == '\n') out_ += "\\n";
        else out_.push_back(c);
    }
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type_name(type);
    out_ += '\n';
}

GORO_DECL std::string_view prometheus_text_writer::type_name(metric_type t) noexcept {
    switch (t) {
    case metric_type::counter: return "counter";
    case metric_type::gauge: return "gauge";
    case metric_type::histogram: return "histogram";
    case metric_type::summary: return "summary";
    case metric_type::untyped: break;
    }
    return "untyped";
}

GORO_DECL bool prometheus_text_writer::name_char(char c, bool first, bool colon_ok) noexcept {
    if (c == '_' || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) return true;
    if (c == ':') return colon_ok;
    return !first && c >= '0' && c <= '9';
}

GORO_DECL void prometheus_text_writer::check_metric_name(std::string_view n) {
    bool ok = !n.empty();
    for (std::size_t i = 0; ok && i < n.size(); ++i) ok = name_char(n[i], i == 0, true);
    if (!ok)
        throw std::invalid_argument("goro::detail::prometheus_text_writer: invalid metric name '" +
                                    std::string(n) + "'");
}

GORO_DECL void prometheus_text_writer::check_label_name(std::string_view n) {
    bool ok = !n.empty() && n.substr(0, std::min<std::size_t>(2, n.size())) != "__";
    for (std::size_t i = 0; ok && i < n.size(); ++i) ok = name_char(n[i], i == 0, false);
    if (!ok)
        throw std::invalid_argument("goro::detail::prometheus_text_writer: invalid label name '" +
                                    std::string(n) + "'");
}

}  // namespace goro::detail

#endif  // GORO_BODIES

#endif  // GORO_HTTP_PROMETHEUS_HPP
