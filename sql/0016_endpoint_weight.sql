-- An endpoint's weight, set at run time: while several endpoints have work, each gets threads in proportion to its weight.

-- NULL is the default weight (1). Unlike the limits, a weight has no environment default and no
-- "none" to tell apart from it, so it needs no `weight_set` flag. A constant (NULL) default:
-- adding the column does not rewrite the table.
ALTER TABLE endpoints ADD COLUMN weight double precision CHECK (weight > 0);
