//! The GCRA of every window of one limit, decided atomically inside Redis by one Lua script.
//!
//! Invariants:
//!
//! 1. Time is Redis's own: the script reads `TIME`, so the clocks of the instances sharing a
//!    limit never matter. Every instant and duration in the script is an integer number of
//!    microseconds; Unix time in µs is below 2^53 until the year 2255, so Lua's doubles hold every
//!    value exactly. Numbers go back to Redis through `string.format('%d')`, never `tostring`
//!    (which would print `1.7e+15`).
//! 2. A key holds the TAT of one window (µs since the Unix epoch on the Redis clock). A missing
//!    key and a TAT `≤ now` both mean "full", so every key is written with `PX` = the time until it
//!    is full again: idle limits vanish from Redis and nothing is lost.
//! 3. All windows charge or none: the script reads every window, decides, and only then writes —
//!    every window when admitted, nothing at all when denied (a denial writes nothing).
//! 4. The keys of one limit share the hash tag `{prefix:name}`, so the script touches a single
//!    cluster slot, and different limits spread over slots.
//! 5. The emission interval is a whole number of µs, rounded *up* from the quota's exact rational
//!    interval (never faster than the quota); `tau = burst · interval`.

use std::fmt;

use crate::quota::Quota;

/// The Lua source. `KEYS[i]` is window `i`'s TAT. `ARGV[1]` = tokens needed (0 = peek),
/// `ARGV[2]` = pause µs (> 0: penalize instead of charging), `ARGV[3]` = `now` in µs (0 = Redis
/// `TIME`; other values only from tests), `ARGV[4]` = tokens wanted (more than `ARGV[1]`: a lease,
/// take up to that many if they fit), then `interval, tau` per window. Reply: `{allowed,
/// remaining, retry_after, reset_after, limiting window (1-based, 0 = none), now, granted}`, all
/// integers (µs, tokens), then each window's debt right after the decision (`TAT − now` µs, ≥ 0;
/// unchanged by a refusal): the per-window state the decision saw. An optional last argument,
/// after the windows, is a *charge*: tokens admitted elsewhere (the fallback, during an outage)
/// added to every window's TAT first, unchecked, and written even when the decision refuses
/// (the one exception to invariant 3: those tokens were already spent). A further optional
/// argument, 1, is the memory guard: a take on a key none of whose windows exist is refused
/// with limiting window `-1`, writing nothing (keys that exist keep working).
pub(crate) const GCRA_LUA: &str = r#"
-- tollgate GCRA, every window of one limit at once (all charge or none; a denial writes nothing).
-- KEYS[i]: TAT of window i, integer µs since the Unix epoch on this server's clock (TIME).
-- ARGV: n (0 = peek), pause µs (> 0: penalize), now µs (0 = TIME), want (>= n: lease up to
-- want), then interval µs, tau µs per window.
-- Reply: {allowed, remaining, retry_after µs, reset_after µs, limiting window, now, granted,
-- then each window's debt µs after the decision}.
local n = tonumber(ARGV[1])
local pause = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function fits(free, interval)
  if free <= 0 then return 0 end
  local r = math.floor(free / interval)
  if r * interval > free then r = r - 1 end
  return r
end
local windows = #KEYS
-- Optional, after the windows: tokens admitted elsewhere (a fallback) to charge first, unchecked.
local charge = tonumber(ARGV[5 + 2 * windows] or '0') or 0
-- Optional, after the charge: 1 = the memory guard is on, refuse a key that holds no state.
local guard = tonumber(ARGV[6 + 2 * windows] or '0') or 0
local exists = false
local intervals, taus, tats, news = {}, {}, {}, {}
local room = -1
for i = 1, windows do
  intervals[i] = tonumber(ARGV[3 + 2 * i])
  taus[i] = tonumber(ARGV[4 + 2 * i])
  local stored = redis.call('GET', KEYS[i])
  if stored then exists = true end
  local tat = tonumber(stored or '0') or 0
  if tat < now then tat = now end
  if charge > 0 then tat = tat + charge * intervals[i] end
  tats[i] = tat
  local r = fits(taus[i] - (tat - now), intervals[i])
  if room < 0 or r < room then room = r end
end
if guard > 0 and not exists and pause == 0 and n > 0 and charge == 0 then
  return {0, 0, 0, 0, -1, now, 0}
end
local take = n
if want > n and room > n then take = math.min(want, room) end
local cost = take
if cost == 0 then cost = 1 end
local retry, limiting = 0, 0
for i = 1, windows do
  local interval, tau, tat = intervals[i], taus[i], tats[i]
  if pause > 0 then
    local target = now + pause + tau - interval
    if target > tat then news[i] = target else news[i] = tat end
  else
    news[i] = tat + take * interval
    local wait = tat + cost * interval - tau - now
    if wait > retry then retry = wait; limiting = i end
  end
end
local admitted = pause > 0 or (take > 0 and retry <= 0)
local state = tats
if admitted then state = news end
local write = admitted or charge > 0
local remaining, reset = -1, 0
for i = 1, windows do
  local debt = state[i] - now
  if write and debt > 0 then
    redis.call('SET', KEYS[i], string.format('%d', state[i]),
      'PX', string.format('%d', math.ceil(debt / 1000)))
  end
  local r = fits(taus[i] - debt, intervals[i])
  if remaining < 0 or r < remaining then remaining = r end
  if debt > reset then reset = debt end
end
local allowed, granted = 0, 0
if retry <= 0 then allowed = 1; retry = 0; granted = take end
if pause > 0 then allowed = 1; retry = pause; granted = 0 end
local reply = {allowed, remaining, retry, reset, limiting, now, granted}
for i = 1, windows do reply[7 + i] = state[i] - now end
return reply
"#;

/// The sliding-window counter (Cloudflare's estimate), every window of one limit at once, with
/// the GCRA script's calling convention and reply (so everything around the script — breaker,
/// fallback, leases, coalescing, cluster routing — is the same).
///
/// Window `i` (`interval`, `tau` as for GCRA) admits at most `L = tau / interval` tokens (the
/// quota's burst) over any `P = tau` µs, estimated from two fixed windows of length `P`:
/// `prev · (P − e) / P + cur`, where `cur` counts the current fixed window (`now ÷ P`), `prev`
/// the one before, and `e` is the time since the current one began. A request of `n` passes
/// when the estimate before its last token is below `L` — `prev·(P − e) + (cur + n − 1)·P <
/// L·P` — in every window (Cloudflare's rule: a saturated window admits `L` per fixed window,
/// where "estimate + n ≤ L" would admit `L − 1`; a fixed window never admits more than `L`).
/// Exact integer maths: `L·P < 2^52`, checked by the builder. `KEYS[i]` holds `"c prev cur blocked"` (the fixed window's index,
/// the two counts, and the instant a pause ends), expiring when the estimate reaches 0. A pause
/// refuses everything until its end, then the counts decide. A reconciliation charge is added
/// to `cur` (at most `L`). The reply's per-window "debt" is `(L − remaining) · interval`: the
/// GCRA debt with the same `remaining`, so a decision's per-window state reports the window's
/// exact `remaining` (its `reset_after` and `retry_after` are that GCRA's, not the counter's:
/// the decision's own `retry_after` is the counter's, exact).
pub(crate) const SLIDING_LUA: &str = r#"
-- tollgate sliding-window counter, every window of one limit at once (all charge or none).
-- Same ARGV and reply as the GCRA script. KEYS[i]: "c prev cur blocked".
local n = tonumber(ARGV[1])
local pause = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
if now == 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local windows = #KEYS
local charge = tonumber(ARGV[5 + 2 * windows] or '0') or 0
local guard = tonumber(ARGV[6 + 2 * windows] or '0') or 0
local exists = false
local Is, Ps, Ls, cs, es, prevs, curs, blocks = {}, {}, {}, {}, {}, {}, {}, {}
-- The most tokens that pass now: largest m with prev*(P-e) + (cur+m-1)*P < L*P.
local function fits(i, cur)
  if blocks[i] > now then return 0 end
  local P = Ps[i]
  local free = Ls[i] * P - prevs[i] * (P - es[i]) - cur * P
  if free <= 0 then return 0 end
  return math.ceil(free / P)
end
local room = -1
for i = 1, windows do
  local I = tonumber(ARGV[3 + 2 * i])
  local P = tonumber(ARGV[4 + 2 * i])
  Is[i] = I; Ps[i] = P; Ls[i] = math.floor(P / I)
  local c = math.floor(now / P)
  cs[i] = c; es[i] = now - c * P
  local prev, cur, blocked = 0, 0, 0
  local stored = redis.call('GET', KEYS[i])
  if stored then
    exists = true
    local sc, sp, su, sb = string.match(stored, '^(%d+) (%d+) (%d+) (%d+)$')
    sc = tonumber(sc or '0') or 0
    sp = tonumber(sp or '0') or 0
    su = tonumber(su or '0') or 0
    blocked = tonumber(sb or '0') or 0
    if sc == c then prev = sp; cur = su elseif sc == c - 1 then prev = su end
  end
  if charge > 0 then
    cur = cur + charge
    if cur > Ls[i] then cur = Ls[i] end
  end
  prevs[i] = prev; curs[i] = cur; blocks[i] = blocked
  local r = fits(i, cur)
  if room < 0 or r < room then room = r end
end
if guard > 0 and not exists and pause == 0 and n > 0 and charge == 0 then
  return {0, 0, 0, 0, -1, now, 0}
end
local take = n
if want > n and room > n then take = math.min(want, room) end
local cost = take
if cost == 0 then cost = 1 end
-- µs until m more pass: the first e' with prev*(P-e') < (L-cur-m+1)*P, in this fixed window
-- or (when cur+m > L) the next one, where cur has become prev.
local function wait_for(i, m)
  local P, L, e, prev, cur = Ps[i], Ls[i], es[i], prevs[i], curs[i]
  local w = 0
  if prev * (P - e) + (cur + m - 1) * P >= L * P then
    if cur + m <= L then
      w = P - math.ceil((L - cur - m + 1) * P / prev) + 1 - e
    else
      local next = P - math.ceil((L - m + 1) * P / cur) + 1
      if next < 0 then next = 0 end
      w = (P - e) + next
    end
  end
  if blocks[i] - now > w then w = blocks[i] - now end
  return w
end
local retry, limiting = 0, 0
if pause == 0 then
  for i = 1, windows do
    local w = wait_for(i, cost)
    if w > retry then retry = w; limiting = i end
  end
end
local admitted = pause > 0 or (take > 0 and retry <= 0)
if admitted then
  for i = 1, windows do
    if pause > 0 then
      if now + pause > blocks[i] then blocks[i] = now + pause end
    else
      curs[i] = curs[i] + take
    end
  end
end
local write = admitted or charge > 0
local remaining, reset = -1, 0
local debts = {}
for i = 1, windows do
  local P, c, prev, cur = Ps[i], cs[i], prevs[i], curs[i]
  local r = fits(i, cur)
  if remaining < 0 or r < remaining then remaining = r end
  local empty = 0
  if cur > 0 then empty = (c + 2) * P - now elseif prev > 0 then empty = (c + 1) * P - now end
  if blocks[i] - now > empty then empty = blocks[i] - now end
  if empty > reset then reset = empty end
  if write then
    if empty > 0 then
      redis.call('SET', KEYS[i], string.format('%d %d %d %d', c, prev, cur, blocks[i]),
        'PX', string.format('%d', math.ceil(empty / 1000)))
    else
      redis.call('DEL', KEYS[i])
    end
  end
  debts[i] = (Ls[i] - r) * Is[i]
end
local allowed, granted = 0, 0
if retry <= 0 then allowed = 1; retry = 0; granted = take end
if pause > 0 then allowed = 1; retry = pause; granted = 0 end
local reply = {allowed, remaining, retry, reset, limiting, now, granted}
for i = 1, windows do reply[7 + i] = debts[i] end
return reply
"#;

/// `undo_key` for the sliding-window counter: `ARGV[1]` = the decision's Redis time (µs),
/// `ARGV[2]` = its `n`, then `interval, tau` per window. Per window, `n` comes off the count of
/// the fixed window the decision was counted in, if that is still the current or the previous
/// one on Redis's clock now (an older one no longer counts: nothing to give). Replies
/// `{windows that gave back}`.
pub(crate) const UNDO_SLIDING_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local origin = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local gave = 0
for i = 1, #KEYS do
  local P = tonumber(ARGV[2 + 2 * i])
  local stored = redis.call('GET', KEYS[i])
  if stored then
    local sc, sp, su, sb = string.match(stored, '^(%d+) (%d+) (%d+) (%d+)$')
    sc = tonumber(sc or '0') or 0
    sp = tonumber(sp or '0') or 0
    su = tonumber(su or '0') or 0
    sb = tonumber(sb or '0') or 0
    local cd = math.floor(origin / P)
    local c = math.floor(now / P)
    local changed = false
    if cd < c - 1 then
      changed = false
    elseif cd == sc and su > 0 then
      su = su - n; if su < 0 then su = 0 end; changed = true
    elseif cd == sc - 1 and sp > 0 then
      sp = sp - n; if sp < 0 then sp = 0 end; changed = true
    end
    if changed then
      local prev, cur = 0, 0
      if sc == c then prev = sp; cur = su elseif sc == c - 1 then prev = su end
      local empty = 0
      if cur > 0 then empty = (c + 2) * P - now elseif prev > 0 then empty = (c + 1) * P - now end
      if sb - now > empty then empty = sb - now end
      if empty > 0 then
        redis.call('SET', KEYS[i], string.format('%d %d %d %d', c, prev, cur, sb),
          'PX', string.format('%d', math.ceil(empty / 1000)))
      else
        redis.call('DEL', KEYS[i])
      end
      gave = gave + 1
    end
  end
end
return {gave}
"#;

/// Largest `L · P` of a sliding window (`burst² · interval`): the script's products stay exact
/// in Lua's doubles.
pub(crate) const MAX_SLIDING_PRODUCT: u128 = 1 << 52;

/// Most tokens one reconciliation charges (`charge · interval` stays exact next to a Unix time
/// in µs: the fallback admits far fewer per key between two Redis decisions).
pub(crate) const MAX_CHARGE: u64 = 1 << 20;

/// `reset_key`: deletes every window of one limit; replies `{deleted}`.
pub(crate) const RESET_LUA: &str = "return {redis.call('DEL', unpack(KEYS))}";

/// `undo_key`: takes back what one admitted decision charged, on Redis's clock. `KEYS[i]` is
/// window `i`'s TAT; `ARGV[1]` = the decision's Redis time (µs), then per window `interval`
/// (µs), the decision's debt (µs after its time: the TAT it stored is `time + debt`) and the
/// cost it charged (µs). Per window, as `gcra::undo`: the cost, less what later decisions
/// charged on top of the stored TAT (they keep their slots), comes off the current TAT; a TAT
/// that reaches `now` means full and the key is deleted; a window already full (or gone) gives
/// nothing. Replies `{windows that gave something back}`.
pub(crate) const UNDO_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local origin = tonumber(ARGV[1])
local gave = 0
for i = 1, #KEYS do
  local debt = tonumber(ARGV[2 * i])
  local cost = tonumber(ARGV[2 * i + 1])
  local stored = origin + debt
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  local later = tat - stored
  if later < 0 then later = 0 end
  local give = cost - later
  if give > 0 and tat > now then
    local new = tat - give
    if new > now then
      redis.call('SET', KEYS[i], string.format('%d', new),
        'PX', string.format('%d', math.ceil((new - now) / 1000)))
    else
      redis.call('DEL', KEYS[i])
    end
    gave = gave + 1
  end
end
return {gave}
"#;

/// Largest number of windows one limit may have.
pub(crate) const MAX_WINDOWS: usize = 8;

/// `interval · burst` must stay far below 2^53 µs, next to a Unix time in µs (invariant 1).
const MAX_TAU_US: u64 = 1 << 50;

/// One window of a limit in the script's units (invariant 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// Emission interval, whole µs (≥ 1).
    pub(crate) interval: u64,
    /// `burst · interval` µs.
    pub(crate) tau: u64,
    /// Tokens at once.
    pub(crate) burst: u64,
}

impl Window {
    /// This window as the in-process GCRA sees it: the same rate, in ns (`interval · 1000` per
    /// token, `tau = burst · interval`), so a reply's debts give exactly the script's numbers.
    pub(crate) fn rate(&self) -> crate::gcra::Rate {
        crate::gcra::Rate::new(self.interval.saturating_mul(1_000), 1, self.burst)
    }

    /// The window of `quota`, or `None` when `burst · interval` is beyond the script's exact range
    /// (2^50 µs, 35 years).
    pub(crate) fn of(quota: &Quota) -> Option<Window> {
        let (period, count) = quota.interval_ratio();
        let interval = u128::from(period)
            .div_ceil(u128::from(count) * 1_000)
            .max(1);
        let burst = quota.burst_size();
        let tau = interval.checked_mul(u128::from(burst))?;
        if tau > u128::from(MAX_TAU_US) {
            return None;
        }
        Some(Window {
            interval: interval as u64,
            tau: tau as u64,
            burst,
        })
    }
}

/// What the script answered, in µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reply {
    /// Each window's debt (`TAT − now`, µs) right after the decision; `windows` are used.
    pub(crate) debts: [u64; MAX_WINDOWS],
    /// How many windows the reply describes.
    pub(crate) windows: usize,
    /// The tokens were taken (or the penalty written).
    pub(crate) allowed: bool,
    /// Tokens that would pass right after this decision, across all windows.
    pub(crate) remaining: u64,
    /// µs until the same request passes (0 when allowed).
    pub(crate) retry_after: u64,
    /// µs until every window is full again.
    pub(crate) reset_after: u64,
    /// The window that said no (0-based), when denied.
    pub(crate) limiting: usize,
    /// The Redis time of the decision, µs since the Unix epoch.
    pub(crate) now: u64,
    /// Tokens taken (more than asked for when leasing; 0 when denied or pausing).
    pub(crate) granted: u64,
    /// The memory guard refused a key with no state in Redis (limiting window `-1`); nothing
    /// was written.
    pub(crate) new_key_refused: bool,
}

impl Reply {
    /// Parses the script's seven integers and up to [`MAX_WINDOWS`] debts; `None` for anything
    /// else.
    pub(crate) fn parse(values: &[i64]) -> Option<Reply> {
        let (&[allowed, remaining, retry, reset, limiting, now, granted], rest) =
            values.split_first_chunk::<7>()?;
        let non_negative = |v: i64| u64::try_from(v).ok();
        if rest.len() > MAX_WINDOWS {
            return None;
        }
        let mut debts = [0; MAX_WINDOWS];
        for (debt, &value) in debts.iter_mut().zip(rest) {
            *debt = non_negative(value)?;
        }
        Some(Reply {
            debts,
            windows: rest.len(),
            allowed: allowed == 1,
            remaining: non_negative(remaining)?,
            retry_after: non_negative(retry)?,
            reset_after: non_negative(reset)?,
            limiting: if limiting == -1 {
                0
            } else {
                usize::try_from(limiting).ok()?.saturating_sub(1)
            },
            new_key_refused: limiting == -1,
            now: non_negative(now)?,
            granted: non_negative(granted)?,
        })
    }
}

/// The windows of a reply as a [`Decision`](crate::limit::Decision) records them: each window's debt in
/// its own whole-µs rate, in ns, at instant 0 (so the derived `remaining`, `reset_after` and
/// `retry_after` are exactly the script's).
pub(crate) fn sights_of(reply: &Reply, windows: &[Window]) -> crate::limiter::SightsBuilder {
    let mut sights = crate::limiter::SightsBuilder::with_capacity(windows.len());
    for (i, window) in windows.iter().enumerate().take(reply.windows) {
        sights.set(
            i,
            crate::limiter::Sight {
                tat: reply.debts[i].saturating_mul(1_000),
                rate: window.rate(),
            },
        );
    }
    sights
}

/// What the script is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Take `n` tokens (`n ≥ 1`) from every window, or none.
    Take(u64),
    /// Take `n` tokens (`n ≥ 1`), and up to `want` if that many fit now (a lease), or none.
    Lease {
        /// Needed.
        n: u64,
        /// Wanted.
        want: u64,
    },
    /// Report the state, take nothing.
    Peek,
    /// Charge `charge` tokens admitted by the fallback (unchecked, written even on a refusal),
    /// then take `n` (`n ≥ 1`) from every window, or none: reconciliation after an outage.
    Reconcile {
        /// Needed now.
        n: u64,
        /// Owed from the fallback.
        charge: u64,
    },
    /// Let nothing pass for this many µs, then resume from an empty burst.
    Pause(u64),
}

/// Builds the `ARGV` of one call (`now_us = 0`: Redis `TIME`).
pub(crate) fn args(op: Op, windows: &[Window], now_us: u64) -> Vec<u64> {
    let (n, pause, want, charge) = match op {
        Op::Take(n) => (n, 0, n, 0),
        Op::Reconcile { n, charge } => {
            // `charge · interval` ≤ 2^50 µs for every window (invariant 1).
            let cap = windows
                .iter()
                .map(|w| MAX_TAU_US / w.interval.max(1))
                .min()
                .unwrap_or(0);
            (n, 0, n, charge.min(MAX_CHARGE).min(cap))
        }
        Op::Lease { n, want } => (n, 0, want.max(n), 0),
        Op::Peek => (0, 0, 0, 0),
        Op::Pause(us) => (0, us.clamp(1, MAX_TAU_US), 0, 0),
    };
    let mut argv = Vec::with_capacity(5 + 2 * windows.len());
    argv.extend([n, pause, now_us, want]);
    for w in windows {
        argv.extend([w.interval, w.tau]);
    }
    if charge > 0 {
        argv.push(charge);
    }
    argv
}

/// Longest limit name kept verbatim in a key; longer (or unsafe) names are hashed.
pub(crate) const MAX_NAME_LEN: usize = 96;

/// The keys of one limit: `{prefix:name}:w<i>` for each window (invariant 4).
///
/// `name` is kept verbatim when it is at most [`MAX_NAME_LEN`] bytes of printable ASCII without
/// braces; otherwise it becomes `#` and the SHA-1 of the name in hex, so keys stay short and the
/// hash tag stays intact whatever a client sends.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    keys: Vec<String>,
}

impl Keys {
    pub(crate) fn new(prefix: &str, name: &str, windows: usize) -> Keys {
        let tag = format!("{{{prefix}:{}}}", safe_name(name));
        Keys {
            keys: (0..windows).map(|i| format!("{tag}:w{i}")).collect(),
        }
    }

    /// The keys of a sliding-window limit: `…:s<i>`, never the GCRA's `…:w<i>` (the two
    /// algorithms' states are different, and a limit renamed between them starts afresh).
    pub(crate) fn sliding(prefix: &str, name: &str, windows: usize) -> Keys {
        let tag = format!("{{{prefix}:{}}}", safe_name(name));
        Keys {
            keys: (0..windows).map(|i| format!("{tag}:s{i}")).collect(),
        }
    }

    pub(crate) fn as_slice(&self) -> &[String] {
        &self.keys
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.keys).finish()
    }
}

fn safe_name(name: &str) -> String {
    let plain = name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}');
    if plain {
        name.to_owned()
    } else {
        format!("#{}", sha1_smol::Sha1::from(name.as_bytes()).digest())
    }
}

/// Whether `prefix` can be used in keys: 1–64 printable ASCII bytes, no braces.
pub(crate) fn valid_prefix(prefix: &str) -> bool {
    (1..=64).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::time::Duration;

    use super::*;
    use tollgate_testkit::redis::TestServer;

    const DAY_US: u64 = 86_400_000_000;

    /// A `redis-server` and one of the scripts (shared with `sliding_tests`).
    pub(super) struct Fixture {
        _server: TestServer,
        pub(super) conn: ::redis::Connection,
        script: ::redis::Script,
    }

    fn fixture() -> Option<Fixture> {
        fixture_of(GCRA_LUA)
    }

    /// A fixture running `lua`; `None` without a `redis-server` (the suite's usual skip rule).
    pub(super) fn fixture_of(lua: &str) -> Option<Fixture> {
        let server = TestServer::start()?;
        let conn = server.connection();
        Some(Fixture {
            _server: server,
            conn,
            script: ::redis::Script::new(lua),
        })
    }

    impl Fixture {
        pub(super) fn call(&mut self, keys: &Keys, op: Op, windows: &[Window], now: u64) -> Reply {
            let mut invocation = self.script.prepare_invoke();
            for key in keys.as_slice() {
                invocation.key(key);
            }
            for arg in args(op, windows, now) {
                invocation.arg(arg);
            }
            let values: Vec<i64> = invocation.invoke(&mut self.conn).expect("script");
            Reply::parse(&values).expect("reply")
        }

        fn get(&mut self, key: &str) -> Option<u64> {
            ::redis::cmd("GET").arg(key).query(&mut self.conn).unwrap()
        }

        fn pttl(&mut self, key: &str) -> i64 {
            ::redis::cmd("PTTL").arg(key).query(&mut self.conn).unwrap()
        }
    }

    fn window(quota: Quota) -> Window {
        Window::of(&quota).unwrap()
    }

    #[test]
    fn windows_round_the_interval_up_to_whole_microseconds() {
        assert_eq!(
            window(Quota::per_second(1_000_000).unwrap()),
            Window {
                interval: 1,
                tau: 1_000_000,
                burst: 1_000_000
            }
        );
        // 3 per second is 333 333⅓ µs: rounded up, never faster than the quota.
        assert_eq!(window(Quota::per_second(3).unwrap()).interval, 333_334);
        // Faster than one per µs rounds to 1 µs.
        assert_eq!(window(Quota::per_second(5_000_000).unwrap()).interval, 1);
        // Too long a burst for exact doubles.
        let huge = Quota::with_period(Duration::from_secs(86_400))
            .unwrap()
            .burst(13_200) // 36.2 years: fits the in-process limiter, not 2^50 µs
            .unwrap();
        assert_eq!(Window::of(&huge), None);
    }

    #[test]
    fn keys_share_one_hash_tag_and_stay_short() {
        let keys = Keys::new("tg", "api", 2);
        assert_eq!(keys.as_slice(), ["{tg:api}:w0", "{tg:api}:w1"]);
        let long = "x".repeat(1_000);
        let hashed = Keys::new("tg", &long, 1);
        assert!(hashed.as_slice()[0].len() < 64, "{hashed:?}");
        let braces = Keys::new("tg", "a}b{c", 1);
        assert!(braces.as_slice()[0].starts_with("{tg:#"));
        assert_eq!(braces.as_slice()[0].matches('}').count(), 1);
        assert_ne!(Keys::new("tg", "a", 1), Keys::new("tg", "b", 1));
        assert!(valid_prefix("tollgate"));
        assert!(!valid_prefix(""));
        assert!(!valid_prefix("a{b"));
        assert!(!valid_prefix(&"p".repeat(65)));
    }

    #[test]
    fn reply_parsing_rejects_garbage() {
        assert_eq!(Reply::parse(&[1, 2, 3]), None);
        assert_eq!(Reply::parse(&[1, -1, 0, 0, 0, 5, 0]), None);
        assert_eq!(Reply::parse(&[1, 2, 0, 0, 0, 5]), None);
        assert_eq!(Reply::parse(&[1, 2, 0, 0, 0, 5, 0, -3]), None);
        assert_eq!(
            Reply::parse(&[1, 2, 0, 0, 0, 5, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
            None
        );
        let r = Reply::parse(&[0, 2, 30, 40, 1, 5, 0, 40, 7]).unwrap();
        assert_eq!((r.allowed, r.limiting, r.now), (false, 0, 5));
        assert_eq!((r.windows, r.debts[0], r.debts[1]), (2, 40, 7));
    }

    #[test]
    fn one_per_day() {
        let Some(mut f) = fixture() else { return };
        let w = [window(
            Quota::with_period(Duration::from_secs(86_400)).unwrap(),
        )];
        assert_eq!((w[0].interval, w[0].tau), (DAY_US, DAY_US));
        let keys = Keys::new("t", "day", 1);
        let now = 1_700_000_000_000_000;
        let first = f.call(&keys, Op::Take(1), &w, now);
        assert!(first.allowed);
        assert_eq!((first.remaining, first.reset_after), (0, DAY_US));
        assert_eq!(f.get("{t:day}:w0"), Some(now + DAY_US));
        let ttl = f.pttl("{t:day}:w0");
        assert!((86_399_000..=86_400_000).contains(&ttl), "{ttl}");
        let denied = f.call(&keys, Op::Take(1), &w, now + 1);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, DAY_US - 1);
        assert_eq!(
            f.get("{t:day}:w0"),
            Some(now + DAY_US),
            "a denial writes nothing"
        );
        assert!(f.call(&keys, Op::Take(1), &w, now + DAY_US).allowed);
    }

    #[test]
    fn a_million_per_second() {
        let Some(mut f) = fixture() else { return };
        let w = [window(Quota::per_second(1_000_000).unwrap())];
        let keys = Keys::new("t", "fast", 1);
        let now = 1_700_000_000_000_000;
        let all = f.call(&keys, Op::Take(1_000_000), &w, now);
        assert!(all.allowed);
        assert_eq!((all.remaining, all.reset_after), (0, 1_000_000));
        let denied = f.call(&keys, Op::Take(1), &w, now);
        assert_eq!((denied.allowed, denied.retry_after), (false, 1));
        let later = f.call(&keys, Op::Take(10), &w, now + 10);
        assert!(later.allowed);
        let peek = f.call(&keys, Op::Peek, &w, now + 500_010);
        assert_eq!(peek.remaining, 500_000);
        assert_eq!(f.get("{t:fast}:w0"), Some(now + 1_000_010));
    }

    #[test]
    fn cost_above_burst_is_denied_and_writes_nothing() {
        let Some(mut f) = fixture() else { return };
        let w = [window(Quota::per_second(10).unwrap())];
        let keys = Keys::new("t", "big", 1);
        let r = f.call(&keys, Op::Take(11), &w, 1_000_000);
        assert!(!r.allowed);
        assert_eq!(r.remaining, 10);
        assert_eq!(f.get("{t:big}:w0"), None);
    }

    #[test]
    fn clock_edges() {
        let Some(mut f) = fixture() else { return };
        let w = [window(Quota::per_second(10).unwrap().burst(2).unwrap())];
        let keys = Keys::new("t", "edge", 1);
        let t0 = 1_699_999_999_999_999; // one µs before a second boundary
        assert!(f.call(&keys, Op::Take(2), &w, t0).allowed);
        // Exactly at the allowed instant: admitted; one µs before: denied by exactly 1 µs.
        let early = f.call(&keys, Op::Take(1), &w, t0 + 99_999);
        assert_eq!((early.allowed, early.retry_after), (false, 1));
        assert!(f.call(&keys, Op::Take(1), &w, t0 + 100_000).allowed);
        // The Redis clock stepped back (failover to a replica behind): the stored TAT still
        // binds, nothing is admitted early, and the reply says how long.
        let back = f.call(&keys, Op::Take(1), &w, t0 - 1_000_000);
        assert!(!back.allowed);
        assert_eq!(back.retry_after, 1_000_000 + 200_000);
        // A key older than now counts as full.
        let idle = f.call(&keys, Op::Peek, &w, t0 + 10_000_000);
        assert_eq!((idle.remaining, idle.reset_after), (2, 0));
        // TIME from Redis itself: agrees with the wall clock within a second.
        let live = f.call(&Keys::new("t", "live", 1), Op::Take(1), &w, 0);
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64;
        assert!(
            live.now.abs_diff(wall) < 1_000_000,
            "{} vs {wall}",
            live.now
        );
    }

    #[test]
    fn all_windows_charge_or_none() {
        let Some(mut f) = fixture() else { return };
        let w = [
            window(Quota::per_second(10).unwrap()),
            window(Quota::per_minute(15).unwrap()),
        ];
        let keys = Keys::new("t", "multi", 2);
        let now = 1_700_000_000_000_000;
        assert!(f.call(&keys, Op::Take(10), &w, now).allowed);
        // Second 2: the per-second window is full again, the per-minute one has 5 left.
        let six = f.call(&keys, Op::Take(6), &w, now + 1_000_000);
        assert!(!six.allowed);
        assert_eq!(six.limiting, 1);
        assert_eq!(six.remaining, 5);
        let tat0 = f.get("{t:multi}:w0");
        let tat1 = f.get("{t:multi}:w1");
        // The denial charged neither window.
        assert_eq!(tat0, Some(now + 1_000_000));
        assert_eq!(tat1, Some(now + 40_000_000));
        assert!(f.call(&keys, Op::Take(5), &w, now + 1_000_000).allowed);
    }

    /// Reconciliation: a charge lands on every window before the decision, unchecked, and is
    /// written even when the decision refuses.
    #[test]
    fn a_charge_is_written_first_even_on_a_refusal() {
        let Some(mut f) = fixture() else { return };
        let w = [
            window(Quota::per_second(10).unwrap()),
            window(Quota::per_minute(100).unwrap()),
        ];
        let keys = Keys::new("t", "charge", 2);
        let now = 1_700_000_000_000_000;
        // 4 owed, then 1 taken: 5 gone from both windows.
        let r = f.call(&keys, Op::Reconcile { n: 1, charge: 4 }, &w, now);
        assert!(r.allowed);
        assert_eq!(r.remaining, 5);
        assert_eq!(f.get("{t:charge}:w0"), Some(now + 500_000));
        assert_eq!(f.get("{t:charge}:w1"), Some(now + 3_000_000));
        // 30 owed: past the burst (debt), the request is refused, the charge is kept.
        let r = f.call(&keys, Op::Reconcile { n: 1, charge: 30 }, &w, now);
        assert!(!r.allowed);
        assert_eq!(f.get("{t:charge}:w0"), Some(now + 3_500_000));
        assert_eq!(f.get("{t:charge}:w1"), Some(now + 21_000_000));
        // Refused until the debt is paid down: a token fits again at 3.5 s − 1 s + 0.1 s.
        assert!(!f.call(&keys, Op::Take(1), &w, now + 2_499_999).allowed);
        assert!(f.call(&keys, Op::Take(1), &w, now + 2_600_000).allowed);
        // A charge is capped so `charge · interval` stays exact (invariant 1).
        let huge = args(
            Op::Reconcile {
                n: 1,
                charge: u64::MAX,
            },
            &w,
            now,
        );
        assert_eq!(*huge.last().unwrap(), MAX_CHARGE);
        assert_eq!(args(Op::Take(1), &w, now).len(), 4 + 2 * w.len());
    }

    #[test]
    fn pause_blocks_then_resumes_empty() {
        let Some(mut f) = fixture() else { return };
        let w = [window(Quota::per_second(10).unwrap())];
        let keys = Keys::new("t", "pause", 1);
        let now = 1_700_000_000_000_000;
        assert!(f.call(&keys, Op::Pause(2_000_000), &w, now).allowed);
        assert!(!f.call(&keys, Op::Take(1), &w, now + 1_999_999).allowed);
        assert!(f.call(&keys, Op::Take(1), &w, now + 2_000_000).allowed);
        assert!(!f.call(&keys, Op::Take(1), &w, now + 2_000_000).allowed);
    }

    /// The script and the in-process `RateLimiter` make the same decisions, report the same
    /// waits (to the µs) and the same state, on random schedules (whole-µs intervals, so the
    /// only difference would be a bug).
    #[test]
    fn agrees_with_the_in_process_limiter() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};

        use crate::clock::ManualClock;
        use crate::limiter::{LimitError, RateLimiter};

        let Some(f) = fixture() else { return };
        let f = std::cell::RefCell::new(f);
        let case = std::cell::Cell::new(0u32);
        let schedule = (
            1..=40u64,                                                   // rate per second
            1..=6u64,                                                    // burst
            proptest::collection::vec((0..120_000u64, 1..=7u64), 1..60), // (advance µs, n)
        );
        let mut runner = TestRunner::new(Config {
            cases: 48,
            ..Config::default()
        });
        runner
            .run(&schedule, |(rate, burst, ops)| {
                let quota = Quota::per_second(rate).unwrap().burst(burst).unwrap();
                let w = [Window::of(&quota).unwrap()];
                prop_assume!(
                    w[0].interval * 1_000 == quota.interval_ratio().0 / quota.interval_ratio().1
                );
                case.set(case.get() + 1);
                let keys = Keys::new("prop", &case.get().to_string(), 1);
                let clock = ManualClock::starting_at(1_000_000_000);
                let local = RateLimiter::with_clock(quota, clock.clone());
                let mut now = 1_700_000_000_000_000u64;
                for (advance, n) in ops {
                    now += advance;
                    clock.advance(Duration::from_micros(advance));
                    let expected = local.check_n(n);
                    if n > burst {
                        let capacity =
                            matches!(expected, Err(LimitError::InsufficientCapacity { .. }));
                        prop_assert!(capacity);
                        continue;
                    }
                    let reply = f.borrow_mut().call(&keys, Op::Take(n), &w, now);
                    match expected {
                        Ok(()) => prop_assert!(reply.allowed),
                        Err(LimitError::NotUntil { retry_after, .. }) => {
                            prop_assert!(!reply.allowed);
                            prop_assert_eq!(Duration::from_micros(reply.retry_after), retry_after);
                        }
                        Err(other) => prop_assert!(false, "{other:?}"),
                    }
                    let state = local.state();
                    prop_assert_eq!(reply.remaining, state.remaining);
                    prop_assert_eq!(Duration::from_micros(reply.reset_after), state.reset_after);
                }
                Ok(())
            })
            .unwrap();
        assert!(case.get() >= 48, "only {} cases ran", case.get());
    }

    /// Several windows: the script's per-window states (as a `Decision` records them) equal the
    /// in-process keyed multi-window limiter's on the same random schedules — verdict, refusing
    /// window, and every window's limit, remaining, reset-after and retry-after (whole-µs
    /// intervals, so any difference would be a bug).
    #[test]
    fn per_window_states_agree_with_the_in_process_keyed_limiter() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};

        use crate::clock::ManualClock;
        use crate::limiter::{Decision, KeyedLimiter, LimitError, Source};

        let Some(f) = fixture() else { return };
        let f = std::cell::RefCell::new(f);
        let case = std::cell::Cell::new(0u32);
        let schedule = (
            // Rates whose intervals are whole µs (divisors of 10^6 and of 6·10^7).
            (
                proptest::sample::select(vec![1u64, 2, 4, 5, 8, 10, 16, 20, 25, 32, 40]),
                1..=6u64,
            ),
            (
                proptest::sample::select(vec![1u64, 3, 12, 15, 48, 75, 80, 150, 200]),
                1..=20u64,
            ),
            proptest::collection::vec((0..400_000u64, 1..=7u64), 1..60), // (advance µs, n)
        );
        let mut runner = TestRunner::new(Config {
            cases: 48,
            ..Config::default()
        });
        runner
            .run(&schedule, |((r1, b1), (r2, b2), ops)| {
                let quotas = [
                    Quota::per_second(r1).unwrap().burst(b1).unwrap(),
                    Quota::per_minute(r2).unwrap().burst(b2).unwrap(),
                ];
                let w: Vec<Window> = quotas.iter().map(|q| Window::of(q).unwrap()).collect();
                for (q, w) in quotas.iter().zip(&w) {
                    let (p, c) = q.interval_ratio();
                    prop_assume!(p % c == 0 && w.interval * 1_000 == p / c);
                }
                case.set(case.get() + 1);
                let keys = Keys::new("prop2", &case.get().to_string(), 2);
                let clock = ManualClock::starting_at(1_000_000_000);
                let local =
                    KeyedLimiter::<String, _>::with_quotas(quotas, 10, clock.clone()).unwrap();
                let mut now = 1_700_000_000_000_000u64;
                for (advance, n) in ops {
                    now += advance;
                    clock.advance(Duration::from_micros(advance));
                    let ours = local.decide("k", n);
                    if n > b1.min(b2) {
                        let capacity =
                            matches!(ours.result, Err(LimitError::InsufficientCapacity { .. }));
                        prop_assert!(capacity);
                        continue;
                    }
                    let reply = f.borrow_mut().call(&keys, Op::Take(n), &w, now);
                    let result = if reply.allowed {
                        Ok(())
                    } else {
                        Err(LimitError::NotUntil {
                            retry_after: Duration::from_micros(reply.retry_after),
                            earliest: 0,
                            quota: reply.limiting,
                        })
                    };
                    let theirs = Decision::new(result, Source::Redis, n, 0, sights_of(&reply, &w));
                    prop_assert_eq!(ours.is_allowed(), theirs.is_allowed());
                    prop_assert_eq!(ours.refused_by(), theirs.refused_by());
                    if let (Some(a), Some(b)) = (ours.result.err(), theirs.result.err()) {
                        prop_assert_eq!(a.retry_after(), b.retry_after());
                    }
                    let ours: Vec<_> = ours.windows().collect();
                    let theirs: Vec<_> = theirs.windows().collect();
                    prop_assert_eq!(ours, theirs);
                }
                Ok(())
            })
            .unwrap();
        assert!(case.get() >= 48, "only {} cases ran", case.get());
    }

    #[test]
    fn a_lease_takes_what_fits_up_to_want() {
        let Some(mut f) = fixture() else { return };
        let w = [window(Quota::per_second(10).unwrap())];
        let keys = Keys::new("t", "lease", 1);
        let now = 1_700_000_000_000_000;
        let lease =
            |f: &mut Fixture, n, want, at| f.call(&keys, Op::Lease { n, want }, &w, now + at);
        let first = lease(&mut f, 1, 4, 0);
        assert!(first.allowed);
        assert_eq!((first.granted, first.remaining), (4, 6));
        // Only 6 fit: the lease shrinks to what fits.
        assert_eq!(lease(&mut f, 1, 8, 0).granted, 6);
        // Nothing fits: denied, nothing written, the wait is for `n` alone.
        let denied = lease(&mut f, 2, 8, 0);
        assert_eq!(
            (denied.allowed, denied.granted, denied.retry_after),
            (false, 0, 200_000)
        );
        assert_eq!(f.get("{t:lease}:w0"), Some(now + 1_000_000));
        // Exact calls report what they took.
        assert_eq!(f.call(&keys, Op::Take(1), &w, now + 100_000).granted, 1);
    }
}

#[cfg(all(test, not(loom)))]
mod sliding_tests;
