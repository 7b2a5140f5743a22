-- Pay-per-use packages (ON_DEMAND_PKG, 按需套餐包): what the merchant's app last reported a
-- package instance has consumed, one row per fee item, each naming the pay-per-use
-- instance it belongs to. queryInstance answers one usageInfo entry per row (spec §3.2).
-- The app replaces an instance's list as a whole; values are exact fixed-point integers
-- of 1/10000, times Unix milliseconds.
CREATE TABLE package_usage (
    instance_id          TEXT NOT NULL,
    -- Where the entry stands in the list the app sent, so both stores answer the same
    -- order (their text collations differ).
    position             INTEGER NOT NULL,
    related_instance_id  TEXT NOT NULL,
    usage_value          INTEGER NOT NULL,
    statistical_ms       INTEGER NOT NULL,
    updated_ms           INTEGER NOT NULL,
    PRIMARY KEY (instance_id, position),
    UNIQUE (instance_id, related_instance_id)
);
