-- The leaf of a rejected reading whose bytes are not kept (reason no_consent: an opt-in device
-- without its owner's consent to collection). 32 zero bytes on every other row, whose raw
-- column holds the message itself. rejected_all, on a cluster, is made again with the column.
ALTER TABLE {db}.rejected ADD COLUMN leaf FixedString(32);
DROP TABLE IF EXISTS {db}.rejected_all;
CREATE TABLE IF NOT EXISTS {db}.rejected_all AS {db}.rejected ENGINE = Distributed({cluster}, {db}, rejected, rand());
