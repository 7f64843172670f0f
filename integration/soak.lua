-- wrk script of the soak (integration/soak.py): interleaves requests to several tenants on one
-- listener and checks every answer in response(); done() prints the tallies as SOAK lines.
--
-- Arguments (after `--`): DELAY_MS, then one spec per tenant, interleaved round-robin:
--   pr:TENANT                  probe-filter under per_request: 200, body exactly "previous=" (a
--                              fresh instance remembers nothing; anything echoed is a leak)
--   pool:TENANT                probe-filter under pooled: 200, body "previous=" or "previous=" plus
--                              a secret this tenant was sent (TENANT/...); another tenant's is a leak
--   auth:TENANT:TOKEN:SUBJECT  auth-filter: alternately the good token (200 from the upstream, whose
--                              body names SUBJECT) and a wrong one (403)
--   fail:TENANT:MODE           chaos-filter with `x-chaos: MODE` (loop, alloc, trap): 503 (on_error deny)
-- Every thread has exactly one connection (run wrk with -t N -c N), so a response always answers
-- the request this thread sent last; secrets are TENANT/THREAD/COUNTER, unique in the run.

local threads = {}
local next_id = 0

function setup(thread)
  next_id = next_id + 1
  thread:set("tid", next_id)
  table.insert(threads, thread)
end

local function split(s, sep)
  local out = {}
  for part in string.gmatch(s, "([^" .. sep .. "]+)") do out[#out + 1] = part end
  return out
end

function init(args)
  delay_ms = tonumber(args[1])
  specs = {}
  for i = 2, #args do
    local f = split(args[i], ":")
    specs[#specs + 1] = { kind = f[1], tenant = f[2], a = f[3], b = f[4], turn = 0 }
  end
  -- Threads start at different specs, so tenants interleave across connections too.
  cursor = (tid - 1) % #specs
  counter = 0
  pending = nil
  -- tallies[key] = count; key is "tenant kind status", "violation tenant category", "reused tenant"
  tallies = {}
  examples = {}
  report = ""
end

local function tally(key, n)
  tallies[key] = (tallies[key] or 0) + (n or 1)
end

local function violation(spec, category, text)
  tally("violation " .. spec.tenant .. " " .. category)
  if #examples < 20 then
    examples[#examples + 1] = spec.tenant .. " " .. category .. ": " .. string.gsub(text, "[\r\n]", " ")
  end
end

function request()
  cursor = cursor % #specs + 1
  local spec = specs[cursor]
  counter = counter + 1
  spec.turn = spec.turn + 1
  local headers = { ["x-tenant-id"] = spec.tenant }
  local p = { spec = spec }
  if spec.kind == "pr" or spec.kind == "pool" then
    p.secret = spec.tenant .. "/" .. tid .. "/" .. counter
    headers["x-secret"] = p.secret
  elseif spec.kind == "auth" then
    p.good = spec.turn % 2 == 1
    headers["authorization"] = "Bearer " .. (p.good and spec.a or ("wrong-" .. counter))
  elseif spec.kind == "fail" then
    headers["x-chaos"] = spec.a
  end
  pending = p
  return wrk.format("GET", "/", headers)
end

local function check(p, status, body)
  local spec = p.spec
  if spec.kind == "pr" or spec.kind == "pool" then
    if status ~= 200 then return violation(spec, "status", status .. " " .. body) end
    if string.sub(body, 1, 9) ~= "previous=" then return violation(spec, "body", body) end
    local echoed = string.sub(body, 10)
    if echoed == "" then return end
    if spec.kind == "pr" then return violation(spec, "leak", "per_request instance echoed `" .. echoed .. "`") end
    local own = spec.tenant .. "/"
    if string.sub(echoed, 1, #own) ~= own then
      return violation(spec, "leak", "pooled instance echoed `" .. echoed .. "` (another tenant's)")
    end
    if echoed == p.secret then return violation(spec, "body", "echoed its own request's secret `" .. echoed .. "`") end
    tally("reused " .. spec.tenant)
  elseif spec.kind == "auth" then
    if p.good then
      if status ~= 200 then return violation(spec, "status", "good token: " .. status .. " " .. body) end
      if not string.find(body, '"subject": "' .. spec.b .. '"', 1, true) then
        return violation(spec, "body", "good token, upstream saw no subject " .. spec.b .. ": " .. body)
      end
    elseif status ~= 403 then
      return violation(spec, "status", "wrong token: " .. status .. " " .. body)
    end
  elseif spec.kind == "fail" then
    if status ~= 503 then return violation(spec, "status", "x-chaos " .. spec.a .. ": " .. status .. " " .. body) end
  end
end

function response(status, headers, body)
  local p = pending
  pending = nil
  if p == nil then return end
  tally(p.spec.tenant .. " " .. p.spec.kind .. " " .. status)
  check(p, status, body or "")
  -- The report is rebuilt after every answer: done() runs in another Lua state and can only read
  -- this thread's globals (strings copy safely; nested tables crash wrk 4.1's copy).
  local lines = {}
  for key, n in pairs(tallies) do lines[#lines + 1] = "SOAK " .. key .. " " .. n end
  for _, e in ipairs(examples) do lines[#lines + 1] = "SOAK_EXAMPLE " .. e end
  report = table.concat(lines, "\n")
end

function delay()
  return delay_ms
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    local r = thread:get("report")
    if r and r ~= "" then io.write(r, "\n") end
  end
  local e = summary.errors
  io.write(string.format("SOAK_SUMMARY requests=%d duration_us=%d connect=%d read=%d write=%d timeout=%d p50_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
