//! Physical lower bounds on links between two peers, used to reject candidates before
//! measuring anything.
//!
//! * **Speed of light in fibre**: light travels at about 200,000 km/s in glass, so a round
//!   trip over a great-circle distance of `d` km takes at least `d / 100` ms (≈ 1 ms per
//!   100 km). Real paths are longer, so this is a floor, never an estimate.
//! * **TCP throughput** (Mathis et al. 1997): a single TCP flow cannot sustain more than
//!   `MSS / RTT × C / √p` with `C = √(3/2)` and loss probability `p`.
//!
//! Coordinates come from the bid or from the small built-in [`CITIES`] table.

use serde::{Deserialize, Serialize};

/// Mean Earth radius in km.
pub const EARTH_RADIUS_KM: f64 = 6371.0;
/// Kilometres of great-circle distance per millisecond of round trip in fibre.
pub const KM_PER_RTT_MS: f64 = 100.0;
/// TCP maximum segment size assumed by [`tcp_throughput_bound_bps`] (Ethernet, no options).
pub const TCP_MSS_BYTES: f64 = 1460.0;

/// A point on Earth, in degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GeoPoint {
    /// Latitude, −90…90.
    pub lat: f64,
    /// Longitude, −180…180.
    pub lon: f64,
}

impl GeoPoint {
    /// Whether the coordinates are finite and in range.
    pub fn is_valid(&self) -> bool {
        self.lat.is_finite()
            && self.lon.is_finite()
            && self.lat.abs() <= 90.0
            && self.lon.abs() <= 180.0
    }

    /// Unit vector on the sphere (for fast distance comparisons: a dot product).
    pub fn unit(&self) -> [f64; 3] {
        let (la, lo) = (self.lat.to_radians(), self.lon.to_radians());
        [la.cos() * lo.cos(), la.cos() * lo.sin(), la.sin()]
    }
}

/// Great-circle distance in km (haversine).
pub fn distance_km(a: GeoPoint, b: GeoPoint) -> f64 {
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = la2 - la1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// The smallest physically possible round-trip time between two points, in ms.
pub fn rtt_floor_ms(a: GeoPoint, b: GeoPoint) -> f64 {
    distance_km(a, b) / KM_PER_RTT_MS
}

/// Cosine of the largest central angle a link may span and still meet `max_rtt_ms`:
/// a pair with unit vectors `u`, `v` can meet it only if `u·v ≥` this value.
pub fn min_dot_for_rtt(max_rtt_ms: f64) -> f64 {
    let angle = max_rtt_ms * KM_PER_RTT_MS / EARTH_RADIUS_KM;
    if angle >= std::f64::consts::PI {
        -2.0
    } else {
        angle.cos()
    }
}

/// Upper bound on one TCP flow's throughput in bits/s for a round trip of `rtt_ms` and a
/// loss probability `loss`; infinite when either is zero (no bound can be derived).
pub fn tcp_throughput_bound_bps(rtt_ms: f64, loss: f64) -> f64 {
    if rtt_ms <= 0.0 || loss <= 0.0 || !rtt_ms.is_finite() || !loss.is_finite() {
        return f64::INFINITY;
    }
    let c = (1.5f64).sqrt();
    (TCP_MSS_BYTES * 8.0) / (rtt_ms / 1000.0) * c / loss.min(1.0).sqrt()
}

/// A city of the built-in table.
#[derive(Debug, Clone, Copy)]
pub struct City {
    /// English name.
    pub name: &'static str,
    /// ISO 3166 alpha-2 country code.
    pub country: &'static str,
    /// Continent code.
    pub continent: &'static str,
    /// Coordinates.
    pub point: GeoPoint,
}

const fn city(
    name: &'static str,
    country: &'static str,
    continent: &'static str,
    lat: f64,
    lon: f64,
) -> City {
    City {
        name,
        country,
        continent,
        point: GeoPoint { lat, lon },
    }
}

/// Major cities with data centres (coordinates rounded to 0.01°).
pub const CITIES: &[City] = &[
    city("Lisbon", "PT", "EU", 38.72, -9.14),
    city("Madrid", "ES", "EU", 40.42, -3.70),
    city("Paris", "FR", "EU", 48.86, 2.35),
    city("London", "GB", "EU", 51.51, -0.13),
    city("Dublin", "IE", "EU", 53.35, -6.26),
    city("Amsterdam", "NL", "EU", 52.37, 4.90),
    city("Frankfurt", "DE", "EU", 50.11, 8.68),
    city("Berlin", "DE", "EU", 52.52, 13.40),
    city("Zurich", "CH", "EU", 47.38, 8.54),
    city("Milan", "IT", "EU", 45.46, 9.19),
    city("Vienna", "AT", "EU", 48.21, 16.37),
    city("Warsaw", "PL", "EU", 52.23, 21.01),
    city("Stockholm", "SE", "EU", 59.33, 18.07),
    city("Helsinki", "FI", "EU", 60.17, 24.94),
    city("Moscow", "RU", "EU", 55.76, 37.62),
    city("Istanbul", "TR", "AS", 41.01, 28.98),
    city("Cairo", "EG", "AF", 30.04, 31.24),
    city("Lagos", "NG", "AF", 6.52, 3.38),
    city("Nairobi", "KE", "AF", -1.29, 36.82),
    city("Johannesburg", "ZA", "AF", -26.20, 28.05),
    city("Dubai", "AE", "AS", 25.20, 55.27),
    city("Mumbai", "IN", "AS", 19.08, 72.88),
    city("Bangalore", "IN", "AS", 12.97, 77.59),
    city("Singapore", "SG", "AS", 1.35, 103.82),
    city("Hong Kong", "HK", "AS", 22.32, 114.17),
    city("Shanghai", "CN", "AS", 31.23, 121.47),
    city("Beijing", "CN", "AS", 39.90, 116.41),
    city("Seoul", "KR", "AS", 37.57, 126.98),
    city("Tokyo", "JP", "AS", 35.68, 139.69),
    city("Sydney", "AU", "OC", -33.87, 151.21),
    city("Auckland", "NZ", "OC", -36.85, 174.76),
    city("New York", "US", "NA", 40.71, -74.01),
    city("Ashburn", "US", "NA", 39.04, -77.49),
    city("Chicago", "US", "NA", 41.88, -87.63),
    city("Toronto", "CA", "NA", 43.65, -79.38),
    city("Dallas", "US", "NA", 32.78, -96.80),
    city("Los Angeles", "US", "NA", 34.05, -118.24),
    city("San Francisco", "US", "NA", 37.77, -122.42),
    city("Seattle", "US", "NA", 47.61, -122.33),
    city("Miami", "US", "NA", 25.76, -80.19),
    city("Mexico City", "MX", "NA", 19.43, -99.13),
    city("Sao Paulo", "BR", "SA", -23.55, -46.63),
    city("Buenos Aires", "AR", "SA", -34.60, -58.38),
    city("Santiago", "CL", "SA", -33.45, -70.67),
];

/// Looks a city up by name (case-insensitive), optionally checking the country code.
pub fn find_city(name: &str, country: Option<&str>) -> Option<&'static City> {
    CITIES.iter().find(|c| {
        c.name.eq_ignore_ascii_case(name.trim())
            && country.is_none_or(|k| c.country.eq_ignore_ascii_case(k.trim()))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(name: &str) -> GeoPoint {
        find_city(name, None).unwrap().point
    }

    #[test]
    fn known_distances() {
        let lt = distance_km(at("Lisbon"), at("Tokyo"));
        assert!((11_000.0..11_300.0).contains(&lt), "{lt}");
        let lm = distance_km(at("Lisbon"), at("Madrid"));
        assert!((490.0..520.0).contains(&lm), "{lm}");
        assert_eq!(distance_km(at("Paris"), at("Paris")), 0.0);
    }

    #[test]
    fn dot_threshold_agrees_with_haversine() {
        for (a, b) in [
            ("Lisbon", "Tokyo"),
            ("London", "Paris"),
            ("Sydney", "Santiago"),
            ("Seattle", "Miami"),
        ] {
            let (pa, pb) = (at(a), at(b));
            let floor = rtt_floor_ms(pa, pb);
            let dot: f64 = pa.unit().iter().zip(pb.unit()).map(|(x, y)| x * y).sum();
            assert!(dot >= min_dot_for_rtt(floor + 0.01), "{a}-{b}");
            assert!(dot < min_dot_for_rtt(floor - 0.01), "{a}-{b}");
        }
        assert_eq!(min_dot_for_rtt(1000.0), -2.0);
    }

    #[test]
    fn mathis_bound() {
        // 100 ms, 1% loss: 1460·8 / 0.1 s · 1.2247 / 0.1 ≈ 1.43 Mbit/s.
        let b = tcp_throughput_bound_bps(100.0, 0.01);
        assert!((1.42e6..1.44e6).contains(&b), "{b}");
        assert!(tcp_throughput_bound_bps(10.0, 0.0).is_infinite());
        assert!(tcp_throughput_bound_bps(0.0, 0.1).is_infinite());
    }
}
