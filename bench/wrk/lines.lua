-- wrk script for the bridge benchmark: POST bodies of N lines, exact counts.
--
--   wrk -t1 -c16 -d60s -s lines.lua http://127.0.0.1:PORT -- PATH LINES LINE_BYTES DEADLINE MAX_REQUESTS
--
-- PATH         /send or /request
-- LINES        lines per request body (LF-terminated)
-- LINE_BYTES   bytes per line, without the LF
-- DEADLINE     Unix time (seconds, may be fractional) after which no more
--              line-carrying requests are issued (0 = none)
-- MAX_REQUESTS line-carrying requests per thread, then stop (0 = no limit)
-- RAW          1: also time each request in Lua (only meaningful with one
--              connection per thread), reported as raw_latency_us: these are
--              not corrected for coordinated omission, unlike wrk's own
--
-- wrk abandons the requests in flight when it stops, so the server may have
-- written lines for requests whose answers nobody read, and exact line
-- accounting would be impossible.  Instead, past the deadline (or the
-- request budget) each connection sends only "noop" requests to a path that
-- answers 404 and carries no lines, and the thread stops itself once every
-- line-carrying request has been answered.  It then writes "STOPPED <id>" on
-- stderr, so the harness can end wrk's sleep (SIGINT) without waiting for -d.
--
-- done() prints one line "WRKJSON {...}" with the counts per status class,
-- the latency percentiles (microseconds) and wrk's summary.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_usec; } bench_timeval;
int gettimeofday(bench_timeval *tv, void *tz);
]]
local tv = ffi.new("bench_timeval")
local function now()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) + tonumber(tv.tv_usec) / 1e6
end

local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  local path = args[1] or "/send"
  local lines = tonumber(args[2] or "1")
  local line_bytes = tonumber(args[3] or "32")
  deadline = tonumber(args[4] or "0")
  max_requests = tonumber(args[5] or "0")
  raw = (args[6] == "1")
  samples = {}
  sent_at = 0

  local line = string.sub(string.rep("bench-line-0123456789abcdef-", 1 + line_bytes / 28), 1, line_bytes)
  local body = string.rep(line .. "\n", lines)
  local headers = { ["Content-Type"] = "text/plain" }
  line_request = wrk.format("POST", path, headers, body)
  noop_request = wrk.format("POST", "/bench-noop", headers, "noop\n")
  body_bytes = #body

  issued = 0      -- line-carrying requests written
  answered = 0    -- answers to them
  s2xx = 0
  s429 = 0
  s503 = 0
  sother = 0
  noops = 0
  stopping = false
  stopped = false
  -- wrk calls request() once on the first thread to check the request it
  -- returns before any is sent; that call must not count as issued.
  verifying = (id == 1)
end

function request()
  if verifying then
    verifying = false
    return line_request
  end
  if not stopping then
    if (max_requests > 0 and issued >= max_requests) or (deadline > 0 and now() >= deadline) then
      stopping = true
    end
  end
  if stopping then
    return noop_request
  end
  issued = issued + 1
  if raw then
    sent_at = now()
  end
  return line_request
end

function response(status, headers, body)
  if status == 404 then
    noops = noops + 1
  else
    answered = answered + 1
    if raw then
      samples[#samples + 1] = (now() - sent_at) * 1e6
    end
    if status >= 200 and status < 300 then
      s2xx = s2xx + 1
    elseif status == 429 then
      s429 = s429 + 1
    elseif status == 503 then
      s503 = s503 + 1
    else
      sother = sother + 1
    end
  end
  if stopping and not stopped and answered == issued then
    stopped = true
    io.stderr:write(string.format("STOPPED %d %.6f\n", id, now()))
    io.stderr:flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local totals = { issued = 0, answered = 0, s2xx = 0, s429 = 0, s503 = 0, sother = 0, noops = 0 }
  local body_bytes_seen = 0
  local all = {}
  for _, thread in ipairs(threads) do
    local mine = thread:get("samples")
    for i = 1, #mine do
      all[#all + 1] = mine[i]
    end
    for key, _ in pairs(totals) do
      totals[key] = totals[key] + thread:get(key)
    end
    body_bytes_seen = thread:get("body_bytes")
  end
  local parts = {}
  for key, value in pairs(totals) do
    table.insert(parts, string.format('"%s": %d', key, value))
  end
  table.insert(parts, string.format('"body_bytes": %d', body_bytes_seen))
  table.insert(parts, string.format('"duration_us": %d', summary.duration))
  table.insert(parts, string.format('"requests": %d', summary.requests))
  table.insert(parts, string.format('"bytes_read": %d', summary.bytes))
  local e = summary.errors
  table.insert(parts, string.format(
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}',
    e.connect, e.read, e.write, e.status, e.timeout))
  local pct = {}
  for _, p in ipairs({ 50, 75, 90, 99, 99.9 }) do
    table.insert(pct, string.format('"%g": %d', p, latency:percentile(p)))
  end
  table.insert(parts, '"latency_us": {' .. table.concat(pct, ", ") .. string.format(
    ', "mean": %.1f, "max": %d}', latency.mean, latency.max))
 if #all > 0 then
    table.sort(all)
    local raw_pct = {}
    for _, p in ipairs({ 50, 75, 90, 99, 99.9 }) do
      local index = math.max(1, math.min(#all, math.ceil(p / 100 * #all)))
      table.insert(raw_pct, string.format('"%g": %.1f', p, all[index]))
    end
    table.insert(parts, '"raw_latency_us": {' .. table.concat(raw_pct, ", ") ..
      string.format(', "count": %d}', #all))
  end
  io.write("WRKJSON {" .. table.concat(parts, ", ") .. "}\n")
end
