//! Contract tests for the Proxmox wire types: property strings round-trip, sshkeys encoding,
//! UPIDs, lenient decoding and error classification (API notes §2, §3, §6).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use hyops_pve::pve::lenient::{value_bool, value_u64};
use hyops_pve::pve::*;
use ipnet::{Ipv4Net, Ipv6Net};
use proptest::prelude::*;
use serde_json::json;

// ------------------------------------------------------------------ strategies

fn extra_kv() -> impl Strategy<Value = Vec<(String, String)>> {
    // keys start with `x`, which no known key does, so they stay "unknown"
    prop::collection::vec(("x[a-z]{1,6}", "[a-z0-9]{1,6}"), 0..3)
}

fn net_device() -> impl Strategy<Value = NetDevice> {
    (
        prop::sample::select(NicModel::ALL.to_vec()),
        prop::option::of(any::<[u8; 6]>()),
        prop::option::of("vmbr[0-9]{1,2}"),
        prop::option::of(1u16..=4094),
        prop::collection::vec(1u16..=4094, 0..4),
        (
            prop::option::of(any::<bool>()),
            prop::option::of(any::<bool>()),
        ),
        prop::option::of(0u32..100_000),
        prop::option::of(0u8..=64),
        prop::option::of(1u32..=65520),
        extra_kv(),
    )
        .prop_map(
            |(model, mac, bridge, tag, trunks, (firewall, link_down), rate, queues, mtu, extra)| {
                NetDevice {
                    model,
                    macaddr: mac.map(MacAddr),
                    bridge,
                    tag,
                    trunks,
                    firewall,
                    link_down,
                    rate: rate.map(|r| f64::from(r) / 10.0),
                    queues,
                    mtu,
                    extra,
                }
            },
        )
}

fn ip_config() -> impl Strategy<Value = IpConfig> {
    let v4 = prop_oneof![
        Just(Ipv4Config::Dhcp),
        (any::<u32>(), 0u8..=32).prop_map(|(a, p)| Ipv4Config::Static(
            Ipv4Net::new(Ipv4Addr::from(a), p).unwrap_or_default()
        )),
    ];
    let v6 = prop_oneof![
        Just(Ipv6Config::Dhcp),
        Just(Ipv6Config::Auto),
        (any::<u128>(), 0u8..=128).prop_map(|(a, p)| Ipv6Config::Static(
            Ipv6Net::new(Ipv6Addr::from(a), p).unwrap_or_default()
        )),
    ];
    (
        prop::option::of(v4),
        prop::option::of(any::<u32>().prop_map(Ipv4Addr::from)),
        prop::option::of(v6),
        prop::option::of(any::<u128>().prop_map(Ipv6Addr::from)),
        extra_kv(),
    )
        .prop_map(|(ip, gw, ip6, gw6, extra)| IpConfig {
            ip,
            gw,
            ip6,
            gw6,
            extra,
        })
}

fn disk_spec() -> impl Strategy<Value = DiskSpec> {
    let opt = (
        prop::sample::select(vec![
            "discard",
            "iothread",
            "ssd",
            "cache",
            "backup",
            "replicate",
            "media",
            "format",
        ]),
        "[a-z0-9]{1,8}",
    )
        .prop_map(|(k, v)| (k.to_string(), v));
    (
        "[a-z][a-z0-9-]{1,8}:vm-[0-9]{3}-disk-[0-9]",
        prop::option::of((0u64..(1 << 50)).prop_map(DiskSize)),
        prop::collection::vec(opt, 0..5),
    )
        .prop_map(|(file, size, options)| DiskSpec {
            file,
            size,
            options,
        })
}

fn upid_parts() -> impl Strategy<Value = (String, u32, u64, u32, String, String, String)> {
    (
        "[a-z][a-z0-9-]{0,10}[a-z0-9]",
        any::<u32>(),
        0u64..=0xF_FFFF_FFFF,
        any::<u32>(),
        prop::sample::select(vec![
            "qmclone",
            "qmstart",
            "qmconfig",
            "resize",
            "qmdestroy",
        ]),
        prop::option::of(100u32..999_999)
            .prop_map(|i| i.map(|v| v.to_string()).unwrap_or_default()),
        prop_oneof![Just("root@pam".to_string()), "[a-z]{1,8}@pve![a-z0-9]{1,8}",],
    )
        .prop_map(|(n, p, ps, st, t, id, u)| (n, p, ps, st, t.to_string(), id, u))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn net_device_round_trips(n in net_device()) {
        let s = n.to_string();
        prop_assert_eq!(s.parse::<NetDevice>().unwrap(), n, "{}", s);
    }

    #[test]
    fn ip_config_round_trips(c in ip_config()) {
        let s = c.to_string();
        prop_assert_eq!(s.parse::<IpConfig>().unwrap(), c, "{}", s);
    }

    #[test]
    fn disk_size_round_trips(b in 0u64..(1u64 << 60)) {
        let s = DiskSize(b).to_string();
        prop_assert!(!s.contains('+'));
        prop_assert_eq!(s.parse::<DiskSize>().unwrap(), DiskSize(b), "{}", s);
    }

    #[test]
    fn disk_spec_round_trips(d in disk_spec()) {
        let s = d.to_string();
        prop_assert_eq!(s.parse::<DiskSpec>().unwrap(), d, "{}", s);
    }

    #[test]
    fn cicustom_round_trips(
        user in prop::option::of("local:snippets/[a-z]{1,8}\\.yaml"),
        network in prop::option::of("local:snippets/[a-z]{1,8}\\.yaml"),
        meta in prop::option::of("local:snippets/[a-z]{1,8}\\.yaml"),
        vendor in prop::option::of("local:snippets/[a-z]{1,8}\\.yaml"),
        extra in extra_kv(),
    ) {
        let c = CiCustom { user, network, meta, vendor, extra };
        let s = c.to_string();
        prop_assert_eq!(s.parse::<CiCustom>().unwrap(), c, "{}", s);
    }

    #[test]
    fn memory_round_trips(current in 16u64..4_000_000, extra in extra_kv()) {
        let m = Memory { current, extra };
        prop_assert_eq!(m.to_string().parse::<Memory>().unwrap(), m);
    }

    #[test]
    fn agent_round_trips(
        enabled in any::<bool>(),
        fstrim in prop::option::of(any::<bool>()),
        freeze in prop::option::of(any::<bool>()),
        ty in prop::option::of(prop_oneof![Just(AgentType::Virtio), Just(AgentType::Isa)]),
        extra in extra_kv(),
    ) {
        let a = Agent { enabled, fstrim_cloned_disks: fstrim, agent_type: ty, guest_fsfreeze: freeze, extra };
        let s = a.to_string();
        prop_assert_eq!(s.parse::<Agent>().unwrap(), a, "{}", s);
    }

    #[test]
    fn tags_round_trip(tags in prop::collection::vec("[a-z0-9_][a-z0-9_.+-]{0,8}", 0..5)) {
        let t = Tags::new(tags).unwrap();
        prop_assert_eq!(t.to_string().parse::<Tags>().unwrap(), t);
    }

    #[test]
    fn upid_round_trips((node, pid, pstart, st, ty, id, user) in upid_parts()) {
        let u = Upid::new(node.clone(), pid, pstart, st, ty.clone(), id.clone(), user.clone());
        let parsed: Upid = u.to_string().parse().unwrap();
        prop_assert_eq!(&parsed, &u);
        prop_assert_eq!(parsed.node(), node.as_str());
        prop_assert_eq!((parsed.pid, parsed.pstart, parsed.starttime), (pid, pstart, st));
        prop_assert_eq!((parsed.task_type, parsed.id, parsed.user), (ty, id, user));
    }

    #[test]
    fn sshkeys_encode_decode_round_trip(keys in prop::collection::vec("[ -~]{1,60}", 0..4)) {
        let keys: Vec<String> = keys.into_iter().map(|k| k.trim().to_string()).filter(|k| !k.is_empty()).collect();
        let enc = encode_sshkeys(&keys);
        let re = regex::Regex::new(r"^[-%a-zA-Z0-9_.!~*'()]*$").unwrap();
        prop_assert!(re.is_match(&enc), "{}", enc);
        prop_assert_eq!(decode_sshkeys(&enc), keys);
    }

    #[test]
    fn property_parsers_never_panic(s in "\\PC{0,60}") {
        let _ = s.parse::<NetDevice>();
        let _ = s.parse::<IpConfig>();
        let _ = s.parse::<DiskSize>();
        let _ = s.parse::<DiskSpec>();
        let _ = s.parse::<CiCustom>();
        let _ = s.parse::<Memory>();
        let _ = s.parse::<Agent>();
        let _ = s.parse::<Tags>();
        let _ = s.parse::<Upid>();
        let _ = s.parse::<DiskSlot>();
        let _ = decode_sshkeys(&s);
    }
}

// ------------------------------------------------------------------ examples from the notes

#[test]
fn net_accepts_model_key_and_macaddr_key() {
    let a: NetDevice = "model=virtio,macaddr=BC:24:11:00:00:01,bridge=vmbr0"
        .parse()
        .unwrap();
    let b: NetDevice = "virtio=BC:24:11:00:00:01,bridge=vmbr0".parse().unwrap();
    assert_eq!(a, b);
    assert_eq!(a.to_string(), "virtio=BC:24:11:00:00:01,bridge=vmbr0");
}

#[test]
fn net_keeps_unknown_keys_in_order() {
    let n: NetDevice = "virtio,bridge=vmbr0,zzz=1,aaa=2".parse().unwrap();
    assert_eq!(n.to_string(), "virtio,bridge=vmbr0,zzz=1,aaa=2");
}

#[test]
fn net_without_model_is_an_error() {
    assert!("bridge=vmbr0".parse::<NetDevice>().is_err());
}

#[test]
fn ipconfig_example_from_the_schema() {
    let c: IpConfig = "ip=10.0.0.5/24,gw=10.0.0.1".parse().unwrap();
    assert_eq!(
        c.ip,
        Some(Ipv4Config::Static("10.0.0.5/24".parse().unwrap()))
    );
    assert_eq!(c.gw, Some(Ipv4Addr::new(10, 0, 0, 1)));
    let d: IpConfig = "ip=dhcp,ip6=auto".parse().unwrap();
    assert_eq!(d.ip, Some(Ipv4Config::Dhcp));
    assert_eq!(d.ip6, Some(Ipv6Config::Auto));
    assert!("ip=10.0.0.5".parse::<IpConfig>().is_err(), "CIDR required");
}

#[test]
fn disk_size_reads_units_and_bare_bytes() {
    assert_eq!("32G".parse::<DiskSize>().unwrap().bytes(), 32 << 30);
    assert_eq!("10240M".parse::<DiskSize>().unwrap(), DiskSize::gib(10));
    assert_eq!("1T".parse::<DiskSize>().unwrap().bytes(), 1 << 40);
    assert_eq!("4096".parse::<DiskSize>().unwrap().bytes(), 4096);
    assert_eq!(DiskSize(1536).to_string(), "1536");
    assert_eq!(DiskSize(3 * 1024).to_string(), "3K");
    assert!("+10G".parse::<DiskSize>().is_err());
    assert!("10GB".parse::<DiskSize>().is_err());
    assert!("".parse::<DiskSize>().is_err());
}

#[test]
fn disk_spec_keeps_options_and_reads_size() {
    let d: DiskSpec = "local-lvm:vm-100-disk-0,cache=writeback,discard=on,size=10240M"
        .parse()
        .unwrap();
    assert_eq!(d.file, "local-lvm:vm-100-disk-0");
    assert_eq!(d.size, Some(DiskSize::gib(10)));
    assert_eq!(d.option("discard"), Some("on"));
    assert_eq!(
        d.to_string(),
        "local-lvm:vm-100-disk-0,cache=writeback,discard=on,size=10G"
    );
    let ci: DiskSpec = "local-lvm:vm-100-cloudinit,media=cdrom".parse().unwrap();
    assert!(ci.is_cdrom() && ci.is_cloudinit());
}

#[test]
fn disk_slot_rejects_scsihw_and_out_of_range() {
    assert!("scsihw".parse::<DiskSlot>().is_err());
    assert!("ide4".parse::<DiskSlot>().is_err());
    assert_eq!(
        "virtio15".parse::<DiskSlot>().unwrap().to_string(),
        "virtio15"
    );
}

#[test]
fn memory_and_agent_short_forms() {
    assert_eq!("4096".parse::<Memory>().unwrap(), Memory::mib(4096));
    assert_eq!("current=4096".parse::<Memory>().unwrap(), Memory::mib(4096));
    assert_eq!(Memory::mib(2048).to_string(), "2048");
    assert!("1".parse::<Agent>().unwrap().enabled);
    let a: Agent = "enabled=1,fstrim_cloned_disks=1".parse().unwrap();
    assert!(a.enabled && a.fstrim_cloned_disks == Some(true));
    assert_eq!(Agent::enabled(true).to_string(), "1");
}

#[test]
fn tags_split_on_all_separators_and_compare_as_sets() {
    let a: Tags = "web;prod,eu west".parse().unwrap();
    assert_eq!(a.0, vec!["web", "prod", "eu", "west"]);
    let b: Tags = "west;eu;prod;web;web".parse().unwrap();
    assert!(a.same_set(&b));
    assert_eq!(a.to_string(), "web;prod;eu;west");
    assert!(Tags::new(["-bad"]).is_err());
    assert!(Tags::new(["has space"]).is_err());
    assert!(Tags::new(["Upper"]).is_err());
}

#[test]
fn upid_parses_examples_from_the_notes() {
    let u: Upid = "UPID:pve1:000003E8:00001B58:6B06C6E0:qmclone:9000:root@pam:"
        .parse()
        .unwrap();
    assert_eq!(u.node(), "pve1");
    assert_eq!(u.pid, 1000);
    assert_eq!(u.task_type, "qmclone");
    assert_eq!(u.id, "9000");
    let t: Upid = "UPID:pve-2:000003E8:1000B58AB:6B06C6E0:qmstart:120:tf@pve!ci:"
        .parse()
        .unwrap();
    assert_eq!(t.user, "tf@pve!ci");
    assert_eq!(t.pstart, 0x1000B58AB);
    assert_eq!(
        t.to_string(),
        "UPID:pve-2:000003E8:1000B58AB:6B06C6E0:qmstart:120:tf@pve!ci:"
    );
}

#[test]
fn upid_rejects_bad_forms() {
    for bad in [
        "UPID:pve1:000003E8:00001B58:6B06C6E0:qmclone:9000:root@pam", // no trailing colon
        "UPID:pve1:3E8:00001B58:6B06C6E0:qmclone:9000:root@pam:",     // short pid
        "UPID:-pve:000003E8:00001B58:6B06C6E0:qmclone:9000:root@pam:", // bad node
        "UPID:pve1:000003E8:00001B58A0:6B06C6E0:qmclone:9000:root@pam:", // 10-digit pstart
        "",
        "not a upid",
    ] {
        assert!(bad.parse::<Upid>().is_err(), "{bad}");
    }
}

#[test]
fn sshkeys_are_rfc3986_encoded_with_percent_20_and_0a() {
    let keys = vec![
        "ssh-ed25519 AAAAC3Nza+/= user@host".to_string(),
        "ssh-rsa AAAAB3 other".to_string(),
    ];
    let enc = encode_sshkeys(&keys);
    assert_eq!(
        enc,
        "ssh-ed25519%20AAAAC3Nza%2B%2F%3D%20user%40host%0Assh-rsa%20AAAAB3%20other"
    );
    assert!(!enc.contains('+'));
    assert_eq!(decode_sshkeys(&enc), keys);
}

#[test]
fn sshkeys_decode_trims_empty_lines() {
    assert_eq!(
        decode_sshkeys("%0Assh-ed25519%20AAAA%20a%0A%0A%20%0A"),
        vec!["ssh-ed25519 AAAA a".to_string()]
    );
}

#[test]
fn lenient_numbers_and_bools() {
    assert_eq!(value_u64(&json!("100")), Some(100));
    assert_eq!(value_u64(&json!(100)), Some(100));
    assert_eq!(value_u64(&json!("x")), None);
    for t in [json!("1"), json!(1), json!(true), json!("true")] {
        assert_eq!(value_bool(&t), Some(true), "{t}");
    }
    for f in [json!("0"), json!(0), json!(false)] {
        assert_eq!(value_bool(&f), Some(false), "{f}");
    }
}

#[test]
fn lenient_structs_accept_stringified_fields() {
    let r: Vec<ClusterResource> = serde_json::from_value(json!([
        {"id":"qemu/100","type":"qemu","node":"pve1","vmid":"100","template":"1","maxmem":"2147483648","name":"t"},
        {"id":"node/pve1","type":"node","node":"pve1","maxcpu":8}
    ]))
    .unwrap();
    assert_eq!(r[0].vmid, Some(100));
    assert!(r[0].template);
    assert_eq!(r[0].maxmem, Some(2 << 30));
    assert_eq!(r[1].vmid, None);
    let s: VmStatus = serde_json::from_value(
        json!({"status":"running","agent":1,"pid":"1234","ha":{"managed":0}}),
    )
    .unwrap();
    assert!(s.is_running() && s.agent);
    assert_eq!(s.pid, Some(1234));
    let v: VersionInfo =
        serde_json::from_value(json!({"version":"9.2.11","release":"9.2","repoid":"abcd1234"}))
            .unwrap();
    assert_eq!(v.major(), Some(9));
    let t: TaskStatus =
        serde_json::from_value(json!({"status":"stopped","exitstatus":"OK","pid":"12"})).unwrap();
    assert!(!t.is_running());
}

#[test]
fn vm_config_types_known_keys_and_keeps_raw() {
    let m = json!({
        "digest": "abc", "name": "web-01", "cores": "2", "sockets": 1, "memory": "4096",
        "agent": "1,fstrim_cloned_disks=1", "onboot": 1, "template": "0",
        "sshkeys": "ssh-ed25519%20AAAA%20me%40host",
        "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=20",
        "ipconfig0": "ip=10.0.0.5/24,gw=10.0.0.1",
        "scsi0": "local-lvm:vm-100-disk-0,size=32G", "scsihw": "virtio-scsi-single",
        "ide2": "local-lvm:vm-100-cloudinit,media=cdrom",
        "net1": "bogus", "tags": "a;b", "description": "managed-by hyops:abc"
    });
    let c = VmConfig::from_map(m.as_object().unwrap());
    assert_eq!(c.cores, Some(2));
    assert_eq!(c.memory, Some(Memory::mib(4096)));
    assert!(c.agent.as_ref().unwrap().enabled);
    assert_eq!(c.onboot, Some(true));
    assert_eq!(c.sshkeys, vec!["ssh-ed25519 AAAA me@host".to_string()]);
    assert_eq!(c.nets[&0].tag, Some(20));
    assert_eq!(c.ipconfigs[&0].gw, Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(c.disks.len(), 2);
    assert_eq!(c.raw["scsihw"], "virtio-scsi-single");
    assert_eq!(c.raw["onboot"], "1");
    assert_eq!(c.unparsed.len(), 1);
    assert_eq!(c.unparsed[0].0, "net1");
    assert!(c.description_contains("hyops:abc"));
    assert!(!c.description_contains(""));
}

#[test]
fn guest_ipv4_filters_loopback_link_local_and_docker() {
    let ifaces: Vec<GuestInterface> = serde_json::from_value(json!([
        {"name":"lo","ip-addresses":[{"ip-address":"127.0.0.1","ip-address-type":"ipv4","prefix":8}]},
        {"name":"eth0","hardware-address":"bc:24:11:00:00:01","ip-addresses":[
            {"ip-address":"192.0.2.10","ip-address-type":"ipv4","prefix":24},
            {"ip-address":"169.254.1.2","ip-address-type":"ipv4","prefix":16},
            {"ip-address":"fe80::1","ip-address-type":"ipv6","prefix":64}]},
        {"name":"docker0","ip-addresses":[{"ip-address":"172.17.0.1","ip-address-type":"ipv4","prefix":16}]}
    ]))
    .unwrap();
    let v4 = ipv4_addresses(&ifaces);
    assert_eq!(
        v4,
        vec![("eth0".to_string(), Ipv4Addr::new(192, 0, 2, 10), Some(24))]
    );
}

#[test]
fn config_update_encodes_values_strictly() {
    let u = ConfigUpdate::new()
        .cores(2)
        .memory(&Memory::mib(4096))
        .sshkeys(&["ssh-ed25519 AAAA+x me@h".to_string()])
        .onboot(true)
        .delete("balloon")
        .digest("d1");
    assert_eq!(u.value("sshkeys"), Some("ssh-ed25519%20AAAA%2Bx%20me%40h"));
    assert_eq!(u.value("onboot"), Some("1"));
    assert_eq!(
        u.keys(),
        vec!["balloon", "cores", "memory", "onboot", "sshkeys"]
    );
    let p = ConfigUpdate::new().cipassword(hyops_pve::secret::Secret::new("pw-SECRET"));
    assert!(!format!("{p:?}").contains("pw-SECRET"));
}

#[test]
fn clone_params_refuse_storage_on_linked_clones() {
    let p = CloneParams {
        newid: 120,
        full: Some(false),
        storage: Some("local-lvm".into()),
        ..Default::default()
    };
    assert!(p.to_params().is_err());
    let bad_id = CloneParams {
        newid: 99,
        ..Default::default()
    };
    assert!(bad_id.to_params().is_err());
}

// ------------------------------------------------------------------ §6 classification

fn class(status: Option<u16>, msg: &str) -> ErrorClass {
    classify_message(status, msg, &BTreeMap::new(), false)
}

#[test]
fn classify_param_error_keeps_the_field_map() {
    let mut e = BTreeMap::new();
    e.insert(
        "sshkeys".to_string(),
        "invalid format - invalid urlencoded string".to_string(),
    );
    assert_eq!(
        classify_message(Some(400), "Parameter verification failed.", &e, true),
        ErrorClass::Param { fields: e.clone() }
    );
}

#[test]
fn classify_auth_and_permission() {
    assert_eq!(class(Some(401), "authentication failure"), ErrorClass::Auth);
    assert_eq!(
        class(Some(401), "Permission denied - invalid csrf token"),
        ErrorClass::Auth
    );
    assert_eq!(
        class(Some(403), "Permission check failed (/vms/100, VM.Allocate)"),
        ErrorClass::Permission
    );
}

#[test]
fn classify_locks() {
    assert_eq!(
        class(Some(500), "VM is locked (clone)"),
        ErrorClass::Locked {
            holder: "clone".into()
        }
    );
    assert_eq!(
        class(
            None,
            "can't lock file '/var/lock/qemu-server/lock-133.conf' - got timeout"
        ),
        ErrorClass::LockTimeout {
            path: "/var/lock/qemu-server/lock-133.conf".into(),
            vmid: Some(133)
        }
    );
    assert_eq!(
        class(None, "clone failed: can't lock file '/var/lock/pve-manager/pve-storage-data-zfs' - got timeout"),
        ErrorClass::StorageLockTimeout { storage: "data-zfs".into() }
    );
    assert_eq!(
        class(
            None,
            "cfs-lock 'storage-ceph' error: got lock request timeout"
        ),
        ErrorClass::StorageLockTimeout {
            storage: "ceph".into()
        }
    );
}

#[test]
fn classify_quorum_taken_ids_and_not_found() {
    assert_eq!(
        class(Some(500), "cluster not ready - no quorum?"),
        ErrorClass::NoQuorum
    );
    assert_eq!(
        class(Some(500), "cfs-lock 'file-user_cfg' error: no quorum!"),
        ErrorClass::NoQuorum
    );
    assert_eq!(
        class(
            Some(500),
            "unable to create VM 101: config file already exists"
        ),
        ErrorClass::VmIdTaken
    );
    assert_eq!(
        class(
            Some(500),
            "unable to create VM 201 - VM 201 already exists on node 'mgmthost1'"
        ),
        ErrorClass::VmIdTaken
    );
    assert_eq!(
        class(None, "close (rename) atomic file '/etc/pve/nodes/pve2/qemu-server/101.conf' failed: File exists"),
        ErrorClass::VmIdTaken
    );
    let mut e = BTreeMap::new();
    e.insert("vmid".to_string(), "VM 218 already exists".to_string());
    assert_eq!(
        classify_message(Some(400), "Parameter verification failed.", &e, false),
        ErrorClass::VmIdTaken
    );
    assert_eq!(
        class(
            Some(500),
            "unable to find configuration file for VM 9000 on node 'pve2'"
        ),
        ErrorClass::NotFound
    );
    assert_eq!(
        class(
            Some(500),
            "Configuration file 'nodes/pve2/qemu-server/120.conf' does not exist"
        ),
        ErrorClass::NotFound
    );
}

#[test]
fn classify_task_outcomes() {
    assert_eq!(
        class(None, "checksum mismatch (file change by other user?)"),
        ErrorClass::ChecksumMismatch
    );
    assert_eq!(
        class(None, "shrinking disks is not supported"),
        ErrorClass::ShrinkRefused
    );
    assert_eq!(
        class(None, "VM 120 already running"),
        ErrorClass::AlreadyRunning
    );
    assert_eq!(
        class(None, "VM quit/powerdown failed - got timeout"),
        ErrorClass::ShutdownTimeout
    );
    assert_eq!(
        class(Some(500), "QEMU guest agent is not running"),
        ErrorClass::AgentNotReady
    );
    assert_eq!(
        class(Some(500), "No QEMU guest agent configured"),
        ErrorClass::AgentNotReady
    );
    assert_eq!(
        class(
            Some(500),
            "VM 120 qmp command 'guest-ping' failed - got timeout"
        ),
        ErrorClass::AgentNotReady
    );
    assert_eq!(
        class(Some(500), "got no worker upid"),
        ErrorClass::NoWorkerUpid
    );
    assert_eq!(class(None, "some other failure"), ErrorClass::TaskFailed);
}

#[test]
fn classify_http_codes() {
    assert_eq!(
        class(
            Some(501),
            "Method 'POST /nodes/pve1/qemu/100/cloudinit' not implemented"
        ),
        ErrorClass::NotImplemented
    );
    assert_eq!(
        class(Some(595), "Connection refused"),
        ErrorClass::Transport { code: Some(595) }
    );
    assert_eq!(
        classify_message(Some(596), "Connection timed out", &BTreeMap::new(), true),
        ErrorClass::WriteOutcomeUnknown
    );
    assert_eq!(
        class(Some(500), "VM 120 is running - destroy failed"),
        ErrorClass::Server
    );
    assert_eq!(class(Some(404), "Not Found"), ErrorClass::NotFound);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn classification_never_panics(status in prop::option::of(100u16..700), msg in "\\PC{0,80}") {
        let _ = classify_message(status, &msg, &BTreeMap::new(), status.is_some());
    }
}

#[test]
fn a_node_row_with_an_odd_maxcpu_still_decodes_without_it() {
    // maxcpu only enables the plan's vCPU check: an odd value skips that check instead of
    // failing the whole GET /nodes listing (and with it every plan).
    for odd in [json!("many"), json!(-1), json!(1.5), json!({}), json!(null)] {
        let n: NodeInfo =
            serde_json::from_value(json!({"node": "pve1", "status": "online", "maxcpu": odd}))
                .unwrap_or_else(|e| panic!("{odd}: {e}"));
        assert_eq!(n.maxcpu, None, "{odd}");
    }
    let n: NodeInfo = serde_json::from_value(json!({"node": "pve1", "maxcpu": "32"})).unwrap();
    assert_eq!(n.maxcpu, Some(32));
}
