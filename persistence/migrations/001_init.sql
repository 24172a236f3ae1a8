-- Shows and their layouts. The layout is written once, at creation.
CREATE TABLE shows (
    show_id     text PRIMARY KEY,
    title       text NOT NULL,
    city        text NOT NULL,
    venue       text NOT NULL,
    starts_at   timestamptz NOT NULL,
    hold_ttl_ms bigint NOT NULL CHECK (hold_ttl_ms > 0),
    categories  jsonb NOT NULL,
    rows        jsonb NOT NULL,
    capacity    integer NOT NULL CHECK (capacity > 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Ownership of a show: the node serving it and its epoch. A node takes a show
-- by raising the epoch; every write batch checks it (fencing).
CREATE TABLE show_owners (
    show_id    text PRIMARY KEY REFERENCES shows (show_id),
    owner_node text NOT NULL,
    epoch      bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Reservations: a hold of 1-10 seats and what became of it.
CREATE TABLE reservations (
    show_id        text NOT NULL REFERENCES shows (show_id),
    reservation_id text NOT NULL,
    user_id        text NOT NULL,
    status         text NOT NULL CHECK (status IN ('HELD', 'BOOKED', 'RELEASED', 'EXPIRED')),
    seat_ids       text[] NOT NULL CHECK (cardinality(seat_ids) BETWEEN 1 AND 10),
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    booked_at      timestamptz,
    ended_at       timestamptz,
    payment_ref    text,
    PRIMARY KEY (show_id, reservation_id)
);
CREATE INDEX reservations_live ON reservations (show_id, expires_at) WHERE status IN ('HELD', 'BOOKED');
CREATE INDEX reservations_user ON reservations (user_id, created_at DESC, reservation_id DESC);
CREATE UNIQUE INDEX reservations_id ON reservations (reservation_id);

-- Live seat claims: one row per seat of a HELD or BOOKED reservation. The
-- primary key is the database's own guarantee that no seat is claimed twice.
CREATE TABLE seat_claims (
    show_id        text NOT NULL,
    seat_id        text NOT NULL,
    reservation_id text NOT NULL,
    PRIMARY KEY (show_id, seat_id),
    FOREIGN KEY (show_id, reservation_id) REFERENCES reservations (show_id, reservation_id)
);
CREATE INDEX seat_claims_reservation ON seat_claims (show_id, reservation_id);

-- Idempotency keys of HoldSeats and ConfirmHold: the request's fingerprint
-- and the reservation it produced.
CREATE TABLE idempotency_keys (
    show_id         text NOT NULL,
    idempotency_key text NOT NULL,
    fingerprint     text NOT NULL,
    reservation_id  text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (show_id, idempotency_key)
);

-- The audit log: every committed change of a reservation.
CREATE TABLE reservation_events (
    event_id       bigserial PRIMARY KEY,
    show_id        text NOT NULL,
    reservation_id text NOT NULL,
    user_id        text NOT NULL,
    kind           text NOT NULL,
    seat_ids       text[] NOT NULL,
    payment_ref    text,
    node_id        text NOT NULL,
    epoch          bigint NOT NULL,
    at             timestamptz NOT NULL
);
CREATE INDEX reservation_events_show ON reservation_events (show_id, event_id DESC);
CREATE INDEX reservation_events_reservation ON reservation_events (reservation_id, event_id DESC);
CREATE INDEX reservation_events_user ON reservation_events (user_id, event_id DESC);
