"""One function per user action, in modules by family (Zulip's `actions/`).

- `common` — the refusal (`ActionRefused`), the permission gate (`require`), audit rows,
  and `queue_operation`, which every operation on a domain goes through;
- `lifecycle` — start, shut down, force off, reboot, suspend, resume, autostart, undefine;
- `images` — save and restore, managed save, forgetting an image;
- `migration` — migration with its pre-flight checks;
- `resize` — vCPUs and memory; `xmledit` — raw XML for team admins;
- `operations` — cancelling a queued or running operation;
- `hosts` — hosts, teams, memberships and which team owns a domain;
- `preferences` — a person's own language.

Each function takes the acting user, checks permission and state, writes the Operation
(or audit) row in a transaction and queues its task once that commits. Views call these;
nothing else changes anything. A refusal raises `common.ActionRefused` after putting itself
on record. The pure decisions they rely on are in `domains.rules`.
"""
