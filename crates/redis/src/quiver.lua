#!lua name=quiver
-- Quiver's ordering rule, atomic per key: a row replaces the stored one only if it is not
-- older by (event time, created time), a missing created time lowest (quiver_core::semantics
-- ::write_wins). Rows are Quiver's online value layout (quiver-online row_codec, format 1):
--   [u8 format][u32 view_version LE][i64 event LE][u8 created flag][i64 created LE if flag]
-- Lua numbers are doubles, exact only to 2^53: every i64 is read and compared in halves, the
-- high half signed and the low half unsigned (both exact).

local function row_order(row)
  if string.byte(row, 1) ~= 1 or #row < 14 then
    return nil
  end
  local event_lo, event_hi, flag = struct.unpack('<I4i4B', row, 6)
  local created_lo, created_hi = 0, 0
  if flag == 1 then
    if #row < 22 then
      return nil
    end
    created_lo, created_hi = struct.unpack('<I4i4', row, 15)
  end
  return { event_hi, event_lo, flag, created_hi, created_lo }
end

local function not_older(incoming, stored)
  for i = 1, #incoming do
    if incoming[i] ~= stored[i] then
      return incoming[i] > stored[i]
    end
  end
  return true
end

-- The order of an i64 (8 bytes, little-endian), or nil.
local function i64_order(value)
  if #value ~= 8 then
    return nil
  end
  local lo, hi = struct.unpack('<I4i4', value)
  return { hi, lo }
end

-- Writes VALUE at KEY unless the stored value is newer by ORDER_OF; 1 if written, 0 if not.
local function write_unless_newer(key, value, order_of)
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
    if not not_older(incoming, order) then
      return 0
    end
  end
  redis.call('SET', key, value)
  return 1
end

-- quiver_put KEY ROW: writes ROW unless the stored row is newer; 1 if written, 0 if not.
local function put(keys, args)
  return write_unless_newer(keys[1], args[1], row_order)
end

-- quiver_max KEY I64: keeps the greatest i64 (8 bytes, little-endian); 1 if raised.
local function max(keys, args)
  return write_unless_newer(keys[1], args[1], i64_order)
end

redis.register_function('quiver_put', put)
redis.register_function('quiver_max', max)
