#!lua name=quiver
-- Quiver's ordering rule, atomic per key: a row replaces the stored one only if it is not
-- older by (event time, created time), a missing created time lowest; between two rows equal
-- on both that carry tie tokens the greater token wins, and a row without one wins every tie
-- and loses none to a token (quiver_core::semantics::write_wins). Rows are Quiver's online value layout
-- (quiver-online row_codec, format 1, or 2 with a tie token):
--   [u8 format][u32 view_version LE][i64 event LE][u8 created flag][i64 created LE if flag]
--   format 2 only: [u8 token length][token bytes]
-- Lua numbers are doubles, exact only to 2^53: every i64 is read and compared in halves, the
-- high half signed and the low half unsigned (both exact). Token bytes are compared one by
-- one as numbers (string comparison in Lua follows the server's locale).

local function row_order(row)
  local format = string.byte(row, 1)
  if (format ~= 1 and format ~= 2) or #row < 14 then
    return nil
  end
  local event_lo, event_hi, flag = struct.unpack('<I4i4B', row, 6)
  local created_lo, created_hi = 0, 0
  local next = 15
  if flag == 1 then
    if #row < 22 then
      return nil
    end
    created_lo, created_hi = struct.unpack('<I4i4', row, 15)
    next = 23
  elseif flag ~= 0 then
    return nil
  end
  local order = { event_hi, event_lo, flag, created_hi, created_lo }
  if format == 2 then
    local len = string.byte(row, next)
    if not len or len == 0 or #row < next + len then
      return nil
    end
    for i = next + 1, next + len do
      order[#order + 1] = string.byte(row, i)
    end
  end
  return order
end

-- Lexicographic: the first differing element decides, else the longer list is greater (a
-- token sorts after its prefixes); equal lists are not older.
local function not_older(incoming, stored)
  local n = math.min(#incoming, #stored)
  for i = 1, n do
    if incoming[i] ~= stored[i] then
      return incoming[i] > stored[i]
    end
  end
  return #incoming >= #stored
end

-- ROW_ORDER_LEN elements are (event, created); a token follows in format 2. Tokens decide only
-- when both rows have one.
local ROW_ORDER_LEN = 5
local function row_not_older(incoming, stored)
  for i = 1, ROW_ORDER_LEN do
    if incoming[i] ~= stored[i] then
      return incoming[i] > stored[i]
    end
  end
  if #incoming == ROW_ORDER_LEN or #stored == ROW_ORDER_LEN then
    return true
  end
  return not_older(incoming, stored)
end

-- The order of an i64 (8 bytes, little-endian), or nil.
local function i64_order(value)
  if #value ~= 8 then
    return nil
  end
  local lo, hi = struct.unpack('<I4i4', value)
  return { hi, lo }
end

-- Writes VALUE at KEY unless the stored value is newer by ORDER_OF and WINS (incoming,
-- stored); 1 if written, 0 if not.
local function write_unless_newer(key, value, order_of, wins)
  local incoming = order_of(value)
  if not incoming then
    return redis.error_reply('quiver: a value of an unknown layout was offered')
  end
  local stored = redis.call('GET', key)
  if stored then
    local order = order_of(stored)
    if not order then
      return redis.error_reply('quiver: the stored value has an unknown layout')
    end
    if not wins(incoming, order) then
      return 0
    end
  end
  redis.call('SET', key, value)
  return 1
end

-- quiver_put KEY ROW [EXPIRE_AT_MS]: writes ROW unless the stored row is newer; 1 if
-- written, 0 if not. With EXPIRE_AT_MS (Unix milliseconds), a written row expires then.
local function put(keys, args)
  local written = write_unless_newer(keys[1], args[1], row_order, row_not_older)
  if written == 1 and args[2] then
    redis.call('PEXPIREAT', keys[1], args[2])
  end
  return written
end

-- quiver_max KEY I64: keeps the greatest i64 (8 bytes, little-endian); 1 if raised.
local function max(keys, args)
  return write_unless_newer(keys[1], args[1], i64_order, not_older)
end

-- The order of i64::MIN: a missing watermark is the beginning of time.
local BEGINNING = { -2147483648, 0 }

-- quiver_advance KEY START END (i64s, 8 bytes little-endian): moves the watermark at KEY to
-- END when START <= watermark < END (quiver_core::semantics::watermark_advances); 1 if moved.
local function advance(keys, args)
  local start, finish = i64_order(args[1]), i64_order(args[2])
  if not start or not finish then
    return redis.error_reply('quiver: a watermark bound is not an i64')
  end
  local watermark = BEGINNING
  local stored = redis.call('GET', keys[1])
  if stored then
    watermark = i64_order(stored)
    if not watermark then
      return redis.error_reply('quiver: the stored watermark is not an i64')
    end
  end
  if not_older(watermark, start) and not not_older(watermark, finish) then
    redis.call('SET', keys[1], args[2])
    return 1
  end
  if stored and stored == args[2] then
    -- Already there (a retry after a lost answer): written again, so that a WAIT on this
    -- connection counts it; the answer stays the rule's.
    redis.call('SET', keys[1], args[2])
  end
  return 0
end

-- quiver_lease KEY HOLDER TTL_MS: takes the lease at KEY for HOLDER, or renews it when HOLDER
-- has it; returns the holder after the call.
local function lease(keys, args)
  local holder = redis.call('GET', keys[1])
  if holder and holder ~= args[1] then
    return holder
  end
  redis.call('SET', keys[1], args[1], 'PX', args[2])
  return args[1]
end

-- quiver_renew KEY HOLDER TTL_MS: extends the lease at KEY while HOLDER has it; 1 if it
-- did, 0 if the lease expired or another holder has it (it is then not taken again).
local function renew(keys, args)
  if redis.call('GET', keys[1]) == args[1] then
    redis.call('PEXPIRE', keys[1], args[2])
    return 1
  end
  return 0
end

-- quiver_release KEY HOLDER: deletes the lease at KEY if HOLDER has it; 1 if deleted.
local function release(keys, args)
  if redis.call('GET', keys[1]) == args[1] then
    redis.call('DEL', keys[1])
    return 1
  end
  return 0
end

redis.register_function('quiver_put', put)
redis.register_function('quiver_max', max)
redis.register_function('quiver_advance', advance)
redis.register_function('quiver_lease', lease)
redis.register_function('quiver_renew', renew)
redis.register_function('quiver_release', release)
