"""A third-party plugin laid out as pip would install it, for tests that load entry points."""


def install_plugin(tmp_path, source, name="site", module="site_plugin", dist="site_plugin-1.0"):
    """Lay out a plugin the way pip would: a module plus a dist-info with entry_points.txt."""
    root = tmp_path / "sitepkgs"
    root.mkdir(exist_ok=True)
    (root / f"{module}.py").write_text(source)
    info = root / f"{dist}.dist-info"
    info.mkdir()
    (info / "entry_points.txt").write_text(f"[cortex_hook]\n{name} = {module}\n")
    (info / "METADATA").write_text(f"Name: {dist.split('-')[0]}\nVersion: 1.0\n")
    return str(root)
