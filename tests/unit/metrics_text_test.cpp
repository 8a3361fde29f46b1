// Prometheus text writer: HELP/TYPE lines, labels, escaping.
#include "tunnel/metrics_text.hpp"

#include <catch2/catch.hpp>

TEST_CASE("metrics text has HELP and TYPE before the samples of a family", "[metrics]") {
  tunnel::MetricsText m;
  m.family("tunnel_x_total", "counter", "Things counted.");
  m.sample("tunnel_x_total", uint64_t{3}, {{"reason", "no-client"}});
  m.sample("tunnel_x_total", uint64_t{0}, {{"reason", "pair-timeout"}});
  m.family("tunnel_up", "gauge", "Up or not.");
  m.sample("tunnel_up", uint64_t{1});
  CHECK(m.text() ==
        "# HELP tunnel_x_total Things counted.\n"
        "# TYPE tunnel_x_total counter\n"
        "tunnel_x_total{reason=\"no-client\"} 3\n"
        "tunnel_x_total{reason=\"pair-timeout\"} 0\n"
        "# HELP tunnel_up Up or not.\n"
        "# TYPE tunnel_up gauge\n"
        "tunnel_up 1\n");
}

TEST_CASE("metrics label values are escaped", "[metrics]") {
  tunnel::MetricsText m;
  m.sample("m", uint64_t{1}, {{"a", "q\"b\\s\nn"}, {"b", "x"}});
  CHECK(m.text() == "m{a=\"q\\\"b\\\\s\\nn\",b=\"x\"} 1\n");
}

TEST_CASE("metrics doubles are written in full", "[metrics]") {
  tunnel::MetricsText m;
  m.sample("process_start_time_seconds", 1795575014.0);
  CHECK(m.text() == "process_start_time_seconds 1795575014\n");
}
