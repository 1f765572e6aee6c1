namespace LoopRpt.Checkpoints;

/// <summary>
/// Atomic replacement of files and directories: write into a temporary sibling, flush, then rename over the target.
/// A process killed at any moment leaves either the old or the new content, never a mix.
/// </summary>
public static class AtomicDirectory
{
    /// <summary>Writes a file via <c>path.tmp-*</c> + rename (atomic on POSIX file systems).</summary>
    public static void WriteFile(string path, Action<string> write)
    {
        var full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        var tmp = full + ".tmp-" + Guid.NewGuid().ToString("N")[..8];
        try
        {
            write(tmp);
            FlushFile(tmp);
            File.Move(tmp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    public static void WriteAllText(string path, string text) => WriteFile(path, tmp => File.WriteAllText(tmp, text));

    /// <summary>
    /// Builds a directory in a temporary sibling and then moves it into place. When the target exists it is first
    /// renamed to <c>target.old-*</c> and deleted after the swap; <see cref="Recover"/> restores it if the process died in
    /// between.
    /// </summary>
    public static void Write(string directory, Action<string> fill)
    {
        var target = Path.GetFullPath(directory).TrimEnd(Path.DirectorySeparatorChar);
        var parent = Path.GetDirectoryName(target)!;
        Directory.CreateDirectory(parent);
        Recover(target);
        var tag = Guid.NewGuid().ToString("N")[..8];
        var tmp = target + ".tmp-" + tag;
        Directory.CreateDirectory(tmp);
        try
        {
            fill(tmp);
            foreach (var f in Directory.EnumerateFiles(tmp)) FlushFile(f);
            if (Directory.Exists(target))
            {
                var old = target + ".old-" + tag;
                Directory.Move(target, old);
                Directory.Move(tmp, target);
                Directory.Delete(old, recursive: true);
            }
            else
            {
                Directory.Move(tmp, target);
            }
        }
        finally
        {
            if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
        }
    }

    /// <summary>If <paramref name="directory"/> is missing but a complete <c>.old-*</c> copy exists (a swap was interrupted), restores it.</summary>
    public static void Recover(string directory)
    {
        var target = Path.GetFullPath(directory).TrimEnd(Path.DirectorySeparatorChar);
        var parent = Path.GetDirectoryName(target);
        if (parent is null || !Directory.Exists(parent)) return;
        var name = Path.GetFileName(target);
        if (!Directory.Exists(target))
        {
            var old = Directory.GetDirectories(parent, name + ".old-*").OrderByDescending(Directory.GetLastWriteTimeUtc).FirstOrDefault();
            if (old is not null) Directory.Move(old, target);
        }
        else
        {
            foreach (var old in Directory.GetDirectories(parent, name + ".old-*")) Directory.Delete(old, recursive: true);
        }
        foreach (var stale in Directory.GetDirectories(parent, name + ".tmp-*")) Directory.Delete(stale, recursive: true);
    }

    private static void FlushFile(string path)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        fs.Flush(flushToDisk: true);
    }
}
