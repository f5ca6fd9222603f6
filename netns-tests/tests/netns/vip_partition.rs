//! The holder is cut off from the other candidates on the underlay (nftables drop, both ways) while the
//! observers still reach everyone; after the partition heals there is exactly one holder, every peer agrees
//! on it, and the observers' traffic lands on it.

use std::time::Duration;

use sdwan_lab::Cut;

use crate::common::{
    assert_answered_by, assert_sole_holder_for, name, settled, vip_lab, wait_role, CANDIDATES, OBSERVERS,
};

#[test]
fn partition_between_candidates_heals_to_one_holder() {
    let lab = vip_lab("vp");
    let old = settled(&lab, Duration::from_secs(10));
    let others: Vec<usize> = CANDIDATES.iter().copied().filter(|&c| c != old).collect();

    lab.partition(&[old], &others, Cut::Both).unwrap();
    // Cut off from p{old}, the best-ranked of the others claims.
    wait_role(&lab, others[0], "holding", Duration::from_secs(10));
    let during = lab.holders().unwrap();
    eprintln!(
        "during the partition the VIP is on {:?}\n{}",
        during.iter().map(|&i| name(i)).collect::<Vec<_>>(),
        lab.vip_view()
    );
    assert!(lab.partition_dropped().unwrap() > 0, "the partition dropped nothing");

    lab.heal_partitions().unwrap();
    let holder = settled(&lab, Duration::from_secs(15));
    eprintln!("after healing, {} holds the VIP", name(holder));
    assert_sole_holder_for(&lab, holder, Duration::from_secs(3));
    assert_eq!(lab.vip_settled().unwrap(), Some(holder), "{}", lab.vip_view());
    for observer in OBSERVERS {
        assert_answered_by(&lab, observer, holder);
    }
}
