-- Seat claims are written and deleted only by the group-commit writer, in the
-- transaction that inserts or ends their reservation, and deleted by
-- (show, seat, reservation), the primary key plus a filter. The foreign key
-- to reservations (one index lookup per claimed seat) and the index by
-- reservation (one more index entry per claimed seat) cost a fifth of the
-- writer's throughput in a flash sale and guarded nothing the writer and the
-- invariant checks do not.
ALTER TABLE seat_claims DROP CONSTRAINT seat_claims_show_id_reservation_id_fkey;
DROP INDEX seat_claims_reservation;
