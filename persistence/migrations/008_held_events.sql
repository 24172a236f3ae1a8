-- A hold's HELD event is its reservations row. The event repeated the row
-- (show, reservation, user, seats, time) and cost a heap row and four
-- index entries per hold, about a third of the database's work for a hold
-- in a flash sale. From this migration on, the writer inserts a hold with
-- its event's ID (drawn from the events' sequence, so that the audit log
-- keeps one order), node and epoch, and no reservation_events row of kind
-- HELD. Older reservations keep their HELD events in reservation_events
-- and have no held_event_id.
--
-- Columns without defaults: no table rewrite.
ALTER TABLE reservations
    ADD COLUMN held_event_id bigint,
    ADD COLUMN held_node     text,
    ADD COLUMN held_epoch    bigint;

-- The audit log by show, newest first, reads this index beside
-- reservation_events_show. By reservation it reads reservations_pkey; by
-- user, reservations_user (a user's reservations are few).
CREATE INDEX reservations_held ON reservations (show_id, held_event_id) WHERE held_event_id IS NOT NULL;

-- The audit log: every committed change of a reservation, and the waitlist
-- and waiting-room events, as ListEvents reads it.
CREATE VIEW audit_events AS
    SELECT event_id, show_id, reservation_id, user_id, kind, seat_ids, payment_ref, node_id, epoch, at
    FROM reservation_events
    UNION ALL
    SELECT held_event_id, show_id, reservation_id, user_id, 'HELD', seat_ids, NULL, held_node, held_epoch, created_at
    FROM reservations
    WHERE held_event_id IS NOT NULL;
