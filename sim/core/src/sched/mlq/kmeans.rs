//! 1-D K-Means with an elbow rule: how `mlq` draws its queue boundaries.

/// 1-D K-Means (Lloyd, quantile start) on sorted `xs`; returns sorted centroids.
pub fn kmeans_1d(xs: &[f64], k: usize) -> (Vec<f64>, f64) {
    let n = xs.len();
    let k = k.min(n).max(1);
    let mut c: Vec<f64> = (0..k)
        .map(|i| xs[((2 * i + 1) * n / (2 * k)).min(n - 1)])
        .collect();
    let mut assign = vec![0usize; n];
    for _ in 0..100 {
        // Sorted data and sorted centroids: cluster j is the run of points nearest to c[j].
        let mut j = 0;
        for (i, &x) in xs.iter().enumerate() {
            while j + 1 < k && (x - c[j + 1]).abs() < (x - c[j]).abs() {
                j += 1;
            }
            assign[i] = j;
        }
        let mut sum = vec![0.0; k];
        let mut cnt = vec![0usize; k];
        for (i, &x) in xs.iter().enumerate() {
            sum[assign[i]] += x;
            cnt[assign[i]] += 1;
        }
        let next: Vec<f64> = (0..k)
            .map(|j| {
                if cnt[j] > 0 {
                    sum[j] / cnt[j] as f64
                } else {
                    c[j]
                }
            })
            .collect();
        let moved = next.iter().zip(&c).any(|(a, b)| (a - b).abs() > 1e-12);
        c = next;
        if !moved {
            break;
        }
    }
    c.sort_by(f64::total_cmp);
    c.dedup();
    let wcss = xs
        .iter()
        .map(|&x| {
            c.iter()
                .map(|&m| (x - m) * (x - m))
                .fold(f64::INFINITY, f64::min)
        })
        .sum();
    (c, wcss)
}

/// The smallest K for which one more cluster would explain less than `elbow` of the total variance
/// (the WCSS of one cluster).
pub fn elbow_kmeans(xs: &[f64], max_k: usize, elbow: f64) -> Vec<f64> {
    let (mut best, total) = kmeans_1d(xs, 1);
    let mut wcss = total;
    for k in 2..=max_k {
        let (c, w) = kmeans_1d(xs, k);
        if c.len() < k || wcss - w < elbow * total {
            break;
        }
        best = c;
        wcss = w;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmeans_finds_separated_clusters_and_the_elbow_stops_there() {
        let mut xs: Vec<f64> = (0..50)
            .map(|i| 0.1 + i as f64 * 1e-4)
            .chain((0..50).map(|i| 0.8 + i as f64 * 1e-4))
            .collect();
        xs.sort_by(f64::total_cmp);
        let c = elbow_kmeans(&xs, 4, 0.1);
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(
            (c[0] - 0.10245).abs() < 1e-9 && (c[1] - 0.80245).abs() < 1e-9,
            "{c:?}"
        );
        // One tight cluster: K = 1.
        assert_eq!(elbow_kmeans(&[0.5; 10], 4, 0.1).len(), 1);
        // Uniform data: WCSS falls as 1/K^2 (1, .25, .11, .06); the third cluster explains 14%, the fourth 5%.
        let u: Vec<f64> = (0..1000).map(|i| i as f64 / 1000.0).collect();
        assert_eq!(elbow_kmeans(&u, 4, 0.1).len(), 3);
    }
}
