-- A show's waiting room (issue #12): when admissions begin, how many queued
-- users are admitted per second, the cap on shoppers (0: none) and how long
-- an admission lasts. All NULL for a show without one.
ALTER TABLE shows
    ADD COLUMN room_opens_at         timestamptz,
    ADD COLUMN room_admit_per_second double precision CHECK (room_admit_per_second > 0),
    ADD COLUMN room_max_active       integer CHECK (room_max_active >= 0),
    ADD COLUMN room_window_ms        bigint CHECK (room_window_ms > 0),
    ADD CONSTRAINT shows_room_whole CHECK (
        (room_opens_at IS NULL) = (room_admit_per_second IS NULL)
        AND (room_opens_at IS NULL) = (room_max_active IS NULL)
        AND (room_opens_at IS NULL) = (room_window_ms IS NULL));

-- The room's users: queued (admitted_at and deadline NULL), or admitted
-- until deadline. A user's row goes when their place or admission ends.
-- room_ended says the room stopped: SOLD_OUT or CLOSED.
CREATE TABLE room_entries (
    show_id     text NOT NULL,
    user_id     text NOT NULL,
    seq         bigint NOT NULL,
    joined_at   timestamptz NOT NULL,
    admitted_at timestamptz,
    deadline    timestamptz,
    PRIMARY KEY (show_id, user_id),
    CHECK ((admitted_at IS NULL) = (deadline IS NULL))
);
CREATE INDEX room_entries_order ON room_entries (show_id, seq);
ALTER TABLE shows ADD COLUMN room_ended text CHECK (room_ended IN ('SOLD_OUT', 'CLOSED'));
