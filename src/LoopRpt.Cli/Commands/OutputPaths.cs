namespace LoopRpt.Cli.Commands;

/// <summary>
/// Checks output paths before any expensive work (tokenizer training, model building, scoring), so a path that cannot be
/// written fails at once with a usage error naming the option and the path, instead of after training. Nothing is left
/// behind: writability is probed with a temporary file in the nearest existing folder, which is deleted again.
/// </summary>
internal static class OutputPaths
{
    /// <summary>A file the command will write (its missing parent folders are created later).</summary>
    public static string File(string path, string option)
    {
        var full = Full(path, option);
        if (Directory.Exists(full)) throw Fail(option, path, "is an existing folder; a file path is expected.");
        var parent = Path.GetDirectoryName(full);
        if (parent is not null) Probe(parent, option, path);
        if (System.IO.File.Exists(full))
        {
            try
            {
                using var _ = new FileStream(full, FileMode.Open, FileAccess.Write, FileShare.ReadWrite);   // opened, not truncated
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw Fail(option, path, $"cannot be written ({e.Message.TrimEnd('.')}).");
            }
        }
        return path;
    }

    /// <summary>A folder the command will create or write into (an existing file there is refused).</summary>
    public static string Folder(string path, string option)
    {
        var full = Full(path, option);
        if (System.IO.File.Exists(full)) throw Fail(option, path, "is an existing file; a folder is expected.");
        Probe(full, option, path);
        // Model directories are saved atomically through a sibling folder: the parent must be writable too.
        if (Path.GetDirectoryName(full) is { } parent) Probe(parent, option, path);
        return path;
    }

    /// <summary>
    /// A model directory the command will save (replacing it as a whole): a new or empty folder, or a LoopRpt model
    /// directory. An existing folder of other files is refused, since the save would delete them.
    /// </summary>
    public static string ModelFolder(string path, string option)
    {
        Folder(path, option);
        if (Checkpoints.ModelDirectory.ReplaceProblem(path) is { } problem) throw CliException.Usage($"{option}: {problem}");
        return path;
    }

    private static string Full(string path, string option)
    {
        if (string.IsNullOrWhiteSpace(path)) throw CliException.Usage($"{option} needs a path.");
        try
        {
            return Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            throw Fail(option, path, "is not a valid path.");
        }
    }

    /// <summary>Finds the nearest existing ancestor of <paramref name="folder"/> (itself included): it must be a folder we can create files in.</summary>
    private static void Probe(string folder, string option, string path)
    {
        var dir = folder;
        while (!Directory.Exists(dir))
        {
            if (System.IO.File.Exists(dir)) throw Fail(option, path, $"cannot be created: '{dir}' is a file, not a folder.");
            dir = Path.GetDirectoryName(dir);
            if (dir is null) return;
        }
        var probe = Path.Combine(dir, ".looprpt-write-probe-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            using var _ = new FileStream(probe, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw Fail(option, path, $"cannot be written: no write access to '{dir}'.");
        }
        finally
        {
            if (System.IO.File.Exists(probe)) try { System.IO.File.Delete(probe); } catch (IOException) { }
        }
    }

    private static CliException Fail(string option, string path, string why) => CliException.Usage($"{option}: '{path}' {why}");
}
