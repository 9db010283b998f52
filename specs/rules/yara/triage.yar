// A small curated set run by `triagent analyze` over the files in a bundle (copies of system files,
// cron/systemd entries, recovered deleted and memfd executables). meta: title, severity, mitre.

rule crypto_miner_xmrig
{
    meta:
        title = "XMRig-style crypto-miner"
        severity = "high"
        mitre = "T1496"
    strings:
        $pool = "stratum+tcp://" ascii
        $pool_tls = "stratum+ssl://" ascii
        $donate = "donate-level" ascii
        $xmrig = "xmrig" ascii nocase
        $randomx = "randomx" ascii nocase
    condition:
        2 of them
}

rule known_cloud_malware_names
{
    meta:
        title = "Names used by cloud-host malware (Kinsing, TeamTNT, Mirai loaders)"
        severity = "high"
        mitre = "T1496, T1059.004"
    strings:
        $a = "kdevtmpfsi" ascii
        $b = "kinsing" ascii
        $c = "TeamTNT" ascii nocase
        $d = "/tmp/.ICE-unix/.x" ascii
        $e = "dbused" ascii fullword
    condition:
        any of them
}

rule shell_reverse_shell_script
{
    meta:
        title = "Script opening a reverse shell"
        severity = "high"
        mitre = "T1059.004"
    strings:
        $dev_tcp = /\/dev\/(tcp|udp)\/[0-9a-zA-Z.\-]+\/[0-9]+/
        $interactive = /(ba)?sh -i/
        $nc_exec = /\bnc(at)? [^\n]{0,80}-e \/bin\/(ba)?sh/
    condition:
        filesize < 1MB and ($nc_exec or ($dev_tcp and $interactive))
}

rule ld_preload_process_hider
{
    meta:
        title = "Shared library that hooks readdir to hide processes (LD_PRELOAD rootkit)"
        severity = "critical"
        mitre = "T1574.006, T1014"
    strings:
        $readdir = "readdir" ascii fullword
        $proc = "/proc/self/fd/%d" ascii
        $filter = "process_to_filter" ascii
        $preload = "/etc/ld.so.preload" ascii
        $dlsym = "dlsym" ascii fullword
    condition:
        uint32(0) == 0x464c457f and $readdir and $dlsym and ($filter or ($proc and $preload))
}

rule ssh_key_implant_script
{
    meta:
        title = "Script that plants an SSH key and locks the file"
        severity = "high"
        mitre = "T1098.004, T1222.002"
    strings:
        $keys = "authorized_keys" ascii
        $chattr = /chattr \+[ai]/
        $echo = /echo ['"]?ssh-(rsa|ed25519) /
    condition:
        filesize < 1MB and $keys and ($chattr or $echo)
}
