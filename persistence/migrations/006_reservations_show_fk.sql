-- Reservations are inserted only by the group-commit writer, whose every
-- transaction first locks the show_owners rows of its shows (FOR SHARE) and
-- leaves out the mutations of a show without one at their epoch; a
-- show_owners row references its show, and shows are never deleted. So the
-- foreign key from reservations to shows, a trigger that looks the show up
-- for every reservation inserted, checked once per row what the
-- transaction already checks once per show. It cost about a quarter of the
-- reservations insert (200 rows: 1.4 of 5.4 ms).
ALTER TABLE reservations DROP CONSTRAINT reservations_show_id_fkey;
