using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace LoopRpt.Hosting;

/// <summary>
/// Reads a retraining data folder: <c>*.txt</c> (UTF-8 text, one document per file, tokenized as the core joins training
/// documents: <see cref="LoopRpt.Tokenization.DocumentTokens"/>) and <c>*.tokens</c> (little-endian int32 ids), in ordinal file-name order. Hidden files and names
/// ending in <c>.tmp</c> are skipped, so a writer can write under a temporary name and rename.
/// </summary>
internal static class DataFolder
{
    public static IReadOnlyList<FileInfo> Files(string directory)
    {
        if (!Directory.Exists(directory)) return [];
        return new DirectoryInfo(directory).EnumerateFiles()
            .Where(f => !f.Name.StartsWith('.') && !f.Name.EndsWith(".tmp", StringComparison.OrdinalIgnoreCase))
            .Where(f => f.Extension.Equals(".txt", StringComparison.OrdinalIgnoreCase) || f.Extension.Equals(".tokens", StringComparison.OrdinalIgnoreCase))
            .OrderBy(f => f.Name, StringComparer.Ordinal).ToList();
    }

    /// <summary>Identifies the folder's content by names, sizes and write times (no file is read).</summary>
    public static string Fingerprint(string directory)
    {
        var sb = new StringBuilder();
        foreach (var f in Files(directory)) sb.Append(f.Name).Append('|').Append(f.Length).Append('|').Append(f.LastWriteTimeUtc.Ticks).Append('\n');
        return Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(sb.ToString())));
    }

    /// <summary>Token ids of one file; every id must lie in [0, <paramref name="vocabSize"/>).</summary>
    public static int[] Read(FileInfo file, ITokenizerService tokenizer, int vocabSize)
    {
        int[] ids;
        if (file.Extension.Equals(".tokens", StringComparison.OrdinalIgnoreCase))
        {
            var bytes = File.ReadAllBytes(file.FullName);
            if (bytes.Length % 4 != 0)
                throw new InvalidDataException($"Token file '{file.FullName}' has {bytes.Length} bytes; a .tokens file holds little-endian int32 ids (a multiple of 4 bytes).");
            ids = new int[bytes.Length / 4];
            for (int i = 0; i < ids.Length; i++) ids[i] = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(4 * i));
        }
        else
        {
            var document = new List<int>();
            tokenizer.ToTextCodec().AppendDocument(document, File.ReadAllText(file.FullName, Encoding.UTF8));
            ids = [.. document];
        }
        for (int i = 0; i < ids.Length; i++)
            if (ids[i] < 0 || ids[i] >= vocabSize)
                throw new InvalidDataException($"'{file.FullName}' holds token id {ids[i]} at position {i}; the served model's vocabulary is [0, {vocabSize}).");
        return ids;
    }

    /// <summary>Writes ids as a <c>.tokens</c> file (atomically: temporary name, then rename).</summary>
    public static void WriteTokens(string path, ReadOnlySpan<int> ids)
    {
        var bytes = new byte[ids.Length * 4];
        for (int i = 0; i < ids.Length; i++) BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(4 * i), ids[i]);
        var tmp = path + ".tmp";
        File.WriteAllBytes(tmp, bytes);
        File.Move(tmp, path, overwrite: true);
    }

    /// <summary>
    /// Training and held-out streams. With a validation folder, all data trains and the folder is held out; otherwise the
    /// last <paramref name="holdoutFraction"/> of every file is held out (so new files add to both).
    /// </summary>
    public static (int[] Train, int[] HeldOut) Load(string dataDirectory, string? validationDirectory, double holdoutFraction, ITokenizerService tokenizer, int vocabSize)
    {
        var train = new List<int>();
        var heldOut = new List<int>();
        foreach (var f in Files(dataDirectory))
        {
            var ids = Read(f, tokenizer, vocabSize);
            int cut = validationDirectory is null ? ids.Length - (int)Math.Round(ids.Length * holdoutFraction) : ids.Length;
            train.AddRange(ids.AsSpan(0, cut));
            heldOut.AddRange(ids.AsSpan(cut));
        }
        if (validationDirectory is not null)
            foreach (var f in Files(validationDirectory)) heldOut.AddRange(Read(f, tokenizer, vocabSize));
        return (train.ToArray(), heldOut.ToArray());
    }
}
