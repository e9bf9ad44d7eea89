-- wrk script for the resp scenario: POST /request with Redis commands, exact counts.
--
--   wrk -t1 -c16 -d60s -s resp.lua http://127.0.0.1:PORT -- PATH LINES LINE_BYTES DEADLINE MAX_REQUESTS RAW VALUE
--
-- The arguments are those of lines.lua (LINES and LINE_BYTES are ignored),
-- plus VALUE, the value the harness stored under the key "k".  The bodies
-- alternate, request by request on each thread, between
--
--   GET k     answered 200 {"replies": ["VALUE"]}
--   INCR n    answered 200 {"replies": [N]}
--
-- and every answer is classified by its body, so the counts need no
-- knowledge of which connection carried which request: get_ok and incr_ok
-- count the 200 answers of exactly those shapes, bad_bodies the other 200s.
-- The harness then checks that every answer was a 200 of the right shape and
-- that Redis' n grew by exactly incr_ok.  The end of a run (no-op requests
-- past the deadline, "STOPPED <id>" on stderr) and done()'s WRKJSON line are
-- those of lines.lua.

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
  local path = args[1] or "/request"
  deadline = tonumber(args[4] or "0")
  max_requests = tonumber(args[5] or "0")
  raw = (args[6] == "1")
  local value = args[7] or ""
  samples = {}
  sent_at = 0

  local headers = { ["Content-Type"] = "text/plain" }
  get_request = wrk.format("POST", path, headers, "GET k\n")
  incr_request = wrk.format("POST", path, headers, "INCR n\n")
  noop_request = wrk.format("POST", "/bench-noop", headers, "noop\n")
  get_answer = '{"replies": ["' .. value .. '"]}'
  body_bytes = 6

  issued = 0      -- command-carrying requests written
  answered = 0    -- answers to them
  get_issued = 0
  incr_issued = 0
  get_ok = 0
  incr_ok = 0
  bad_bodies = 0
  s2xx = 0
  s429 = 0
  s503 = 0
  sother = 0
  noops = 0
  stopping = false
  stopped = false
  verifying = (id == 1)
end

function request()
  if verifying then
    verifying = false
    return get_request
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
  if issued % 2 == 1 then
    get_issued = get_issued + 1
    return get_request
  end
  incr_issued = incr_issued + 1
  return incr_request
end

function response(status, headers, body)
  if status == 404 then
    noops = noops + 1
  else
    answered = answered + 1
    if raw then
      samples[#samples + 1] = (now() - sent_at) * 1e6
    end
    if status == 200 then
      s2xx = s2xx + 1
      if body == get_answer then
        get_ok = get_ok + 1
      elseif string.find(body, '^{"replies": %[%d+%]}$') then
        incr_ok = incr_ok + 1
      else
        bad_bodies = bad_bodies + 1
        if bad_bodies <= 3 then
          io.stderr:write("BAD BODY " .. string.sub(body, 1, 200) .. "\n")
        end
      end
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
  local totals = { issued = 0, answered = 0, s2xx = 0, s429 = 0, s503 = 0, sother = 0,
                   noops = 0, get_issued = 0, incr_issued = 0, get_ok = 0, incr_ok = 0,
                   bad_bodies = 0 }
  local all = {}
  for _, thread in ipairs(threads) do
    local mine = thread:get("samples")
    for i = 1, #mine do
      all[#all + 1] = mine[i]
    end
    for key, _ in pairs(totals) do
      totals[key] = totals[key] + thread:get(key)
    end
  end
  local parts = {}
  for key, value in pairs(totals) do
    table.insert(parts, string.format('"%s": %d', key, value))
  end
  table.insert(parts, '"body_bytes": 7')
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
