-- Waitlists: users waiting, first come first served, for a show's held seats
-- to come free. Rows are written only by the group-commit writer, in the
-- transaction of the mutation that changes them, and read by LoadShow.

-- How long a turn's offer lasts and how long a user may wait. A constant
-- default adds the columns without rewriting the table.
ALTER TABLE shows
    ADD COLUMN offer_window_ms bigint NOT NULL DEFAULT 120000 CHECK (offer_window_ms > 0),
    ADD COLUMN max_wait_ms     bigint NOT NULL DEFAULT 3600000 CHECK (max_wait_ms > 0);

-- One row per waiting user of a show: waiting (no offer), or holding a turn
-- (offer_seats not empty, offered_at and offer_deadline set). seq is the
-- join order; it is not unique in the database, the engine keeps it so.
CREATE TABLE waitlist_entries (
    show_id        text NOT NULL REFERENCES shows (show_id),
    user_id        text NOT NULL,
    seq            bigint NOT NULL,
    seats_wanted   integer NOT NULL CHECK (seats_wanted BETWEEN 1 AND 10),
    joined_at      timestamptz NOT NULL,
    deadline       timestamptz NOT NULL,
    offer_seats    text[] NOT NULL DEFAULT '{}' CHECK (cardinality(offer_seats) <= 10),
    offered_at     timestamptz,
    offer_deadline timestamptz,
    PRIMARY KEY (show_id, user_id),
    CHECK ((offered_at IS NULL) = (offer_deadline IS NULL)
       AND (offered_at IS NULL) = (cardinality(offer_seats) = 0))
);
CREATE INDEX waitlist_entries_order ON waitlist_entries (show_id, seq);

-- The seats of a show held back for the head of its queue. An empty array
-- is no seats; the row is kept, overwritten by the next change.
CREATE TABLE waitlist_aside (
    show_id  text PRIMARY KEY REFERENCES shows (show_id),
    seat_ids text[] NOT NULL
);
