using System.Text;

namespace LoopRpt.Cli.Input;

/// <summary>How plain-text files are cut into documents.</summary>
public enum DocumentSplit
{
    /// <summary>One document per non-empty line.</summary>
    Lines,
    /// <summary>One document per file.</summary>
    Files,
}

/// <summary>
/// Reads documents from text files (one per line or one per file), TSV/CSV files (a named column, header row required) and
/// folders of .txt files (recursively, in ordinal path order). Everything must be UTF-8 (a UTF-8/UTF-16 byte-order mark is
/// honoured); problems become <see cref="CliException"/>s with <see cref="ExitCodes.InputError"/> naming the file.
/// </summary>
public static class Corpus
{
    /// <summary>Reads every document of <paramref name="paths"/>, in order. Empty documents are skipped; none at all is an error.</summary>
    /// <param name="paths">Files or folders.</param>
    /// <param name="split">How .txt (and other plain) files are cut into documents.</param>
    /// <param name="column">Column of TSV/CSV files (default "text").</param>
    public static IReadOnlyList<string> Read(IReadOnlyList<string> paths, DocumentSplit split = DocumentSplit.Lines, string? column = null)
    {
        if (paths.Count == 0) throw CliException.Usage("No input given: pass --input FILE_OR_FOLDER (text, .tsv, .csv, or a folder of .txt files).");
        var docs = new List<string>();
        foreach (var p in paths)
        {
            if (Directory.Exists(p))
            {
                var files = Directory.GetFiles(p, "*.txt", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToArray();
                if (files.Length == 0) throw CliException.Input($"Folder '{p}' holds no .txt files.");
                foreach (var f in files) docs.AddRange(ReadFile(f, split, column));
            }
            else if (File.Exists(p)) docs.AddRange(ReadFile(p, split, column));
            else throw CliException.Input($"Input '{p}' does not exist (expected a text, .tsv or .csv file, or a folder of .txt files).");
        }
        if (docs.Count == 0)
            throw CliException.Input($"The corpus is empty: {string.Join(", ", paths.Select(p => $"'{p}'"))} hold no non-empty document.");
        return docs;
    }

    private static IEnumerable<string> ReadFile(string path, DocumentSplit split, string? column)
    {
        var text = ReadAllText(path);
        var ext = Path.GetExtension(path).ToLowerInvariant();
        if (ext is ".tsv" or ".csv") return Delimited.Column(text, ext == ".tsv" ? '\t' : ',', column ?? "text", path).Where(d => d.Length > 0);
        if (split == DocumentSplit.Files) return text.Trim().Length == 0 ? [] : [text.TrimEnd('\r', '\n')];
        return text.Split('\n').Select(l => l.TrimEnd('\r')).Where(l => l.Trim().Length > 0);
    }

    /// <summary>Reads a file as strict UTF-8 (or UTF-16 with a byte-order mark); invalid bytes or NUL characters are errors.</summary>
    public static string ReadAllText(string path)
    {
        string text;
        try
        {
            using var reader = new StreamReader(path, new UTF8Encoding(false, throwOnInvalidBytes: true), detectEncodingFromByteOrderMarks: true);
            text = reader.ReadToEnd();
        }
        catch (DecoderFallbackException e)
        {
            throw CliException.Input($"'{path}' is not valid UTF-8 text ({e.Message.TrimEnd('.')}). Convert it to UTF-8 first, e.g. `iconv -f latin1 -t utf-8 in.txt > out.txt`.", e);
        }
        catch (UnauthorizedAccessException e)
        {
            throw CliException.Input($"'{path}' cannot be read: {e.Message}", e);
        }
        int nul = text.IndexOf('\0');
        if (nul >= 0) throw CliException.Input($"'{path}' contains a NUL character at offset {nul}: it looks like a binary file, not text.");
        return text;
    }
}

/// <summary>RFC 4180-style reader for CSV (quoted fields, "" escapes, newlines inside quotes) and plain TSV.</summary>
public static class Delimited
{
    /// <summary>The values of column <paramref name="column"/> (header row first; the name is matched case-insensitively).</summary>
    public static IEnumerable<string> Column(string text, char separator, string column, string path)
    {
        var rows = Records(text, separator, path).ToList();
        if (rows.Count == 0) throw CliException.Input($"'{path}' is empty: a header row naming the columns is required.");
        var header = rows[0].Select(h => h.Trim()).ToList();
        int index = header.FindIndex(h => string.Equals(h, column, StringComparison.OrdinalIgnoreCase));
        if (index < 0)
            throw CliException.Input($"Could not find input column '{column}' in '{path}'; its columns are: {string.Join(", ", header.Select(h => $"'{h}'"))}. Choose one with --column.");
        for (int r = 1; r < rows.Count; r++)
        {
            var row = rows[r];
            if (row.Count == 1 && row[0].Length == 0) continue;                 // blank line
            if (index >= row.Count)
                throw CliException.Input($"'{path}', record {r + 1}: has {row.Count} fields, but column '{column}' is field {index + 1}.");
            yield return row[index];
        }
    }

    /// <summary>The records of <paramref name="text"/>; CSV quoting applies when <paramref name="separator"/> is a comma.</summary>
    public static IEnumerable<List<string>> Records(string text, char separator, string path = "input")
    {
        bool quoting = separator == ',';
        var field = new StringBuilder();
        var row = new List<string>();
        bool inQuotes = false, any = false;
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            any = true;
            if (inQuotes)
            {
                if (c == '"' && i + 1 < text.Length && text[i + 1] == '"') { field.Append('"'); i++; }
                else if (c == '"') inQuotes = false;
                else field.Append(c);
            }
            else if (quoting && c == '"' && field.Length == 0) inQuotes = true;
            else if (c == separator) { row.Add(field.ToString()); field.Clear(); }
            else if (c == '\n')
            {
                row.Add(field.ToString().TrimEnd('\r'));
                field.Clear();
                yield return row;
                row = [];
                any = false;
            }
            else field.Append(c);
        }
        if (inQuotes) throw CliException.Input($"'{path}': a quoted CSV field is not closed before the end of the file.");
        if (any) { row.Add(field.ToString().TrimEnd('\r')); yield return row; }
    }
}
