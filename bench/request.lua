-- wrk script: an authorized request for tenant t0; prints a JSON summary line (latencies in us).
wrk.method = "GET"
wrk.path = "/"
wrk.headers["x-tenant-id"] = "t0"
wrk.headers["authorization"] = "Bearer s3cret"

local think_ms = tonumber(os.getenv("THAW_BENCH_THINK_MS") or "0")
if think_ms > 0 then
  function delay() return think_ms end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"errors":%d,"non_2xx":%d,"p50":%d,"p99":%d,"p999":%d,"mean":%.1f}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.mean))
end
