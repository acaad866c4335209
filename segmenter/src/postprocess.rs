//! After the argmax: drop specks, and measure what is left.

use ndarray::Array3;

/// Removes connected components (26-connected, over all non-zero labels together) with fewer than
/// `min_voxels` voxels. Returns how many components were removed.
pub fn remove_small_components(labels: &mut Array3<u8>, min_voxels: usize) -> usize {
    if min_voxels <= 1 {
        return 0;
    }
    let (nk, nj, ni) = labels.dim();
    let idx = |k: usize, j: usize, i: usize| (k * nj + j) * ni + i;
    let flat = labels.as_slice_mut().expect("standard layout");
    let mut seen = vec![false; flat.len()];
    let mut stack = Vec::new();
    let mut component = Vec::new();
    let mut removed = 0;
    for start in 0..flat.len() {
        if flat[start] == 0 || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        component.clear();
        while let Some(p) = stack.pop() {
            component.push(p);
            let (k, j, i) = (p / (nj * ni), (p / ni) % nj, p % ni);
            for dk in -1i64..=1 {
                for dj in -1i64..=1 {
                    for di in -1i64..=1 {
                        let (k2, j2, i2) = (k as i64 + dk, j as i64 + dj, i as i64 + di);
                        if k2 < 0
                            || j2 < 0
                            || i2 < 0
                            || k2 >= nk as i64
                            || j2 >= nj as i64
                            || i2 >= ni as i64
                        {
                            continue;
                        }
                        let q = idx(k2 as usize, j2 as usize, i2 as usize);
                        if flat[q] != 0 && !seen[q] {
                            seen[q] = true;
                            stack.push(q);
                        }
                    }
                }
            }
        }
        if component.len() < min_voxels {
            removed += 1;
            for &p in &component {
                flat[p] = 0;
            }
        }
    }
    removed
}

/// Voxels carrying each label value (index = label).
pub fn label_counts(labels: &Array3<u8>) -> [usize; 256] {
    let mut counts = [0usize; 256];
    for &l in labels.iter() {
        counts[l as usize] += 1;
    }
    counts
}

/// Dice of the union of `labels` between two label volumes (1.0 when both are empty).
pub fn dice(a: &Array3<u8>, b: &Array3<u8>, labels: &[u8]) -> f64 {
    let (mut inter, mut na, mut nb) = (0usize, 0usize, 0usize);
    for (&x, &y) in a.iter().zip(b.iter()) {
        let (ia, ib) = (labels.contains(&x), labels.contains(&y));
        na += ia as usize;
        nb += ib as usize;
        inter += (ia && ib) as usize;
    }
    if na + nb == 0 {
        1.0
    } else {
        2.0 * inter as f64 / (na + nb) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specks_go_blobs_stay() {
        let mut l = Array3::<u8>::zeros((4, 8, 8));
        for k in 0..3 {
            for j in 2..5 {
                for i in 2..5 {
                    l[[k, j, i]] = if i == 3 { 3 } else { 2 };
                }
            }
        }
        l[[3, 7, 7]] = 1; // isolated voxel
        l[[0, 0, 7]] = 2; // two voxels touching diagonally
        l[[1, 1, 6]] = 2;
        let removed = remove_small_components(&mut l, 3);
        assert_eq!(removed, 2);
        assert_eq!(l[[3, 7, 7]], 0);
        assert_eq!(l[[0, 0, 7]], 0);
        assert_eq!(label_counts(&l)[2] + label_counts(&l)[3], 27);
        assert_eq!(dice(&l, &l, &[2, 3]), 1.0);
    }
}
