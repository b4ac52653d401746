//! File outputs: links, headers, ranges, expiry, quota, stream delivery.
