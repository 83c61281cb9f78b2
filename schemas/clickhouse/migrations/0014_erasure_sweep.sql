-- Erase entries keep applying (services/erasure, Sweep): a reading stored in an entry's range
-- after the entry was carried out (a flush in flight at the time, a late redelivery, a range
-- reaching into the future) is erased by the next sweep, which writes the entry's row in
-- erasures again: readings is then what the entry covers, late how many of those were stored
-- after it was carried out, swept_at when a sweep last erased some (1970 if none ever did).
-- ReplacingMergeTree keeps the newest row of an entry_index, the one FINAL reads, so readers of
-- entry_index and readings (store.ErasuresDone, `anchorline status`, the API) see the latest.
ALTER TABLE {db}.erasures ADD COLUMN late UInt64;
ALTER TABLE {db}.erasures ADD COLUMN swept_at DateTime
