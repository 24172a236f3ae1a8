-- Seats each user has in a show, held plus booked: the database's own
-- guarantee of the 10-seat limit per user and show (invariant 4), beside the
-- engine's. The writer adds a hold's seats in the hold's transaction and
-- takes a release's or an expiry's away in theirs; a row that would pass 10
-- fails the CHECK, so the hold is refused even if the engine's memory were
-- wrong. A user with no seats has no row.
CREATE TABLE user_seats (
    show_id text NOT NULL,
    user_id text NOT NULL,
    seats   integer NOT NULL CHECK (seats BETWEEN 1 AND 10),
    PRIMARY KEY (show_id, user_id)
);
INSERT INTO user_seats (show_id, user_id, seats)
SELECT show_id, user_id, sum(cardinality(seat_ids))
FROM reservations WHERE status IN ('HELD', 'BOOKED')
GROUP BY show_id, user_id;
