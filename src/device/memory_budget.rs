//! How much device memory the KV cache gets on a GPU: vLLM's rule, as a pure function
//! of numbers measured at start-up, so it is tested without a device.
//!
//! usable = total x utilization - (total - free) - weights - activations
//!
//! where `total - free` is what other processes (and the CUDA context) already hold
//! when ferrite starts, `utilization` is `--gpu-memory-utilization` (the part of the
//! whole device ferrite may bring the device's use up to), `weights` the bytes of the
//! model's weights on the device and `activations` the peak bytes of one step's
//! activations and workspaces. `free` must be read *before* the weights are put on the
//! device, otherwise they are counted twice.
//!
//! Several LLMs on one device share it ([`kv_share_of`]): each one, when it loads,
//! takes its share of what is left after its own weights, the KV shares of the LLMs
//! already loaded (measured, as `free`) and the weights and activations of the LLMs
//! still to load there (planned), so with even shares every LLM gets the same KV bytes
//! whatever the load order.
//!
//! Invariants: never panics, never wraps: every bad input (a utilization outside
//! (0, 1], free above total) and every budget that is not positive is an `Err` whose
//! message names the numbers.

/// Bytes of KV cache that fit, or why none do.
pub fn kv_cache_budget(
    total_bytes: u64,
    free_bytes: u64,
    utilization: f64,
    weights_bytes: u64,
    activation_bytes: u64,
) -> Result<u64, String> {
    if !(utilization > 0.0 && utilization <= 1.0) {
        return Err(format!(
            "--gpu-memory-utilization {utilization} is not in (0, 1]"
        ));
    }
    if free_bytes > total_bytes {
        return Err(format!(
            "the device reports more free memory ({}) than it has ({})",
            gib(free_bytes),
            gib(total_bytes)
        ));
    }
    let allowed = (total_bytes as f64 * utilization).floor() as i128;
    let others = i128::from(total_bytes - free_bytes);
    let usable = allowed - others - i128::from(weights_bytes) - i128::from(activation_bytes);
    if usable <= 0 {
        return Err(format!(
            "no device memory is left for the KV cache: {} total x {utilization} utilization = {} allowed, \
             minus {} already used by other processes, {} of weights and {} of activations, leaves {}; \
             raise --gpu-memory-utilization, free the device, or use a smaller model",
            gib(total_bytes),
            gib(allowed as u64),
            gib(total_bytes - free_bytes),
            gib(weights_bytes),
            gib(activation_bytes),
            signed_gib(usable)
        ));
    }
    Ok(usable as u64)
}

/// The KV bytes of one LLM among several on a device: `share / (share + pending_shares)`
/// of `available` (what [`kv_cache_budget`] gives after this LLM's weights, measured)
/// less `pending_bytes` (the planned weights and activations of the LLMs still to load
/// on the device, whose KV shares are `pending_shares`).
pub fn kv_share_of(
    available: u64,
    pending_bytes: u64,
    share: f64,
    pending_shares: f64,
) -> Result<u64, String> {
    if !(share > 0.0 && share.is_finite() && pending_shares >= 0.0 && pending_shares.is_finite()) {
        return Err(format!(
            "KV shares must be positive numbers (this model {share}, the others {pending_shares})"
        ));
    }
    let Some(left) = available.checked_sub(pending_bytes).filter(|&l| l > 0) else {
        return Err(format!(
            "the device has {} for KV caches after this model's weights, but the models still to              load on it need {} for their weights and activations; raise              --gpu-memory-utilization, put a model on another device, or serve fewer models",
            gib(available),
            gib(pending_bytes)
        ));
    };
    Ok((left as f64 * share / (share + pending_shares)).floor() as u64)
}

/// `bytes` in GiB with two decimals, for messages.
fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn signed_gib(bytes: i128) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn follows_the_rule() {
        // 80 GiB device, 1 GiB held by others, 0.9 => 72 GiB allowed; 4 GiB of weights,
        // 2 GiB of activations => 65 GiB of KV cache.
        assert_eq!(
            kv_cache_budget(80 * GIB, 79 * GIB, 0.9, 4 * GIB, 2 * GIB),
            Ok(65 * GIB)
        );
        assert_eq!(kv_cache_budget(10 * GIB, 10 * GIB, 1.0, 0, 0), Ok(10 * GIB));
        assert_eq!(
            kv_cache_budget(101, 101, 0.5, 10, 10),
            Ok(30),
            "50.5 allowed bytes floor to 50"
        );
    }

    #[test]
    fn no_room_is_an_error_that_names_the_numbers() {
        // Others hold 40 GiB of 80: at 0.5 nothing is left, before our weights.
        let e = kv_cache_budget(80 * GIB, 40 * GIB, 0.5, 4 * GIB, GIB).unwrap_err();
        for part in [
            "80.00 GiB total",
            "0.5 utilization",
            "40.00 GiB allowed",
            "40.00 GiB already used",
            "4.00 GiB of weights",
            "1.00 GiB of activations",
            "leaves -5.00 GiB",
        ] {
            assert!(e.contains(part), "{part:?} not in {e}");
        }
        // Exactly zero is not a cache either.
        assert!(kv_cache_budget(10 * GIB, 10 * GIB, 0.5, 5 * GIB, 0).is_err());
    }

    /// Two LLMs of 4 and 8 GiB on a device with 72 GiB allowed: whichever loads first,
    /// each gets (72 - 12) / 2 = 30 GiB of KV, and a 2:1 share gives 40 and 20.
    #[test]
    fn shares_are_even_whatever_the_load_order() {
        let allowed = 72 * GIB;
        for (first, second) in [(4 * GIB, 8 * GIB), (8 * GIB, 4 * GIB)] {
            let kv1 = kv_share_of(allowed - first, second, 1.0, 1.0).unwrap();
            let kv2 = kv_share_of(allowed - first - kv1 - second, 0, 1.0, 0.0).unwrap();
            assert_eq!((kv1, kv2), (30 * GIB, 30 * GIB));
        }
        let kv1 = kv_share_of(allowed - 4 * GIB, 8 * GIB, 2.0, 1.0).unwrap();
        let kv2 = kv_share_of(allowed - 4 * GIB - kv1 - 8 * GIB, 0, 1.0, 0.0).unwrap();
        assert_eq!((kv1, kv2), (40 * GIB, 20 * GIB));
    }

    #[test]
    fn no_room_for_the_models_still_to_load_is_an_error() {
        let e = kv_share_of(4 * GIB, 5 * GIB, 1.0, 1.0).unwrap_err();
        assert!(e.contains("4.00 GiB") && e.contains("5.00 GiB"), "{e}");
        assert!(kv_share_of(4 * GIB, 4 * GIB, 1.0, 0.0).is_err());
        for (s, p) in [
            (0.0, 1.0),
            (-1.0, 0.0),
            (f64::NAN, 0.0),
            (1.0, -1.0),
            (1.0, f64::INFINITY),
        ] {
            assert!(kv_share_of(GIB, 0, s, p).is_err(), "{s} {p}");
        }
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        for u in [0.0, -0.1, 1.01, f64::NAN, f64::INFINITY] {
            let e = kv_cache_budget(GIB, GIB, u, 0, 0).unwrap_err();
            assert!(e.contains("--gpu-memory-utilization"), "{e}");
        }
        assert!(kv_cache_budget(GIB, 2 * GIB, 0.9, 0, 0).is_err());
        assert!(kv_cache_budget(u64::MAX, u64::MAX, 1.0, u64::MAX, u64::MAX).is_err());
        assert!(kv_cache_budget(0, 0, 0.9, 0, 0).is_err());
    }
}
