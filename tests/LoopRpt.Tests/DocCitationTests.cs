using System.Text.RegularExpressions;

namespace LoopRpt.Tests;

/// <summary>
/// Every "docs/*.md §N" citation in the repository (src/, tests/, examples/, docs/, README.md) names a document that
/// exists and a heading numbered N in it ("## 4. LoopRPT", "### 4.5 Per-step rewards"); a range "§4.1–4.4" needs
/// both ends. A cited docs/*.md without a section must exist too.
/// </summary>
public class DocCitationTests
{
    // A docs/*.md name, optionally in backticks, then (across a line break and a comment marker) an optional § reference.
    private static readonly Regex Citation = new(
        @"docs/(?<doc>[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*\.md)`?(?:(?:\s|///|//)*\u00a7(?<sec>\d+(?:\.\d+)*)(?:\s*[\u2013-]\s*(?<end>\d+(?:\.\d+)*))?)?",
        RegexOptions.Compiled);

    private static readonly Regex NumberedHeading = new(@"^#{1,6}\s+(?<n>\d+(?:\.\d+)*)\.?\s", RegexOptions.Compiled | RegexOptions.Multiline);

    [Fact]
    public void EveryDocCitationResolvesToANumberedHeading()
    {
        var root = RepositoryRoot();
        var problems = new List<string>();
        int cited = 0;
        foreach (var file in SourcesAndDocs(root))
        {
            var found = Check(File.ReadAllText(file), doc => ReadDoc(root, doc));
            cited += found.Citations;
            problems.AddRange(found.Problems.Select(p => $"{Path.GetRelativePath(root, file)}: {p}"));
        }
        Assert.True(cited > 30, $"only {cited} section citations found: is the scan looking in the right place ({root})?");
        Assert.True(problems.Count == 0, "citations that do not resolve:\n" + string.Join("\n", problems));
    }

    [Fact]
    public void TheCheckReportsAMissingSectionAndAMissingDocument()
    {
        // A document with sections 1 and 2.1; citations of 2.1 resolve, 3 and 2.2 do not, nor a missing document.
        const string doc = "# Title\n\n## 1. First\n\n### 2.1 Second\n";
        string Cite(string name, string sec) => "docs/" + name + ".md \u00a7" + sec;
        var text = string.Join("\n", Cite("a", "2.1"), Cite("a", "1"), Cite("a", "3"), Cite("a", "2.1\u20132.2"), Cite("missing", "1"));
        var found = Check(text, name => name == "a.md" ? doc : null);
        Assert.Equal(5, found.Citations);
        Assert.Equal(3, found.Problems.Count);
        Assert.Contains(found.Problems, p => p.Contains("\u00a73 ") && p.Contains("a.md"));
        Assert.Contains(found.Problems, p => p.Contains("\u00a72.2 "));
        Assert.Contains(found.Problems, p => p.Contains("missing.md") && p.Contains("does not exist"));
    }

    private static (int Citations, List<string> Problems) Check(string text, Func<string, string?> readDoc)
    {
        var problems = new List<string>();
        int citations = 0;
        foreach (Match m in Citation.Matches(text))
        {
            var name = m.Groups["doc"].Value;
            var doc = readDoc(name);
            int line = text.AsSpan(0, m.Index).Count('\n') + 1;
            if (m.Groups["sec"].Success) citations++;
            if (doc is null)
            {
                problems.Add($"line {line}: docs/{name} does not exist");
                continue;
            }
            if (!m.Groups["sec"].Success) continue;
            var headings = NumberedHeading.Matches(doc).Select(h => h.Groups["n"].Value).ToHashSet();
            foreach (var g in new[] { m.Groups["sec"], m.Groups["end"] }.Where(g => g.Success))
                if (!headings.Contains(g.Value))
                    problems.Add($"line {line}: \u00a7{g.Value} (cited as \"{m.Value.ReplaceLineEndings(" ")}\") is not a numbered heading of docs/{name}");
        }
        return (citations, problems);
    }

    private static string? ReadDoc(string root, string name)
    {
        var path = Path.Combine(root, "docs", name);
        return File.Exists(path) ? File.ReadAllText(path) : null;
    }

    private static IEnumerable<string> SourcesAndDocs(string root)
    {
        var bin = new Regex(@"[/\\](bin|obj)[/\\]");
        foreach (var (dir, pattern) in new[] { ("src", "*.cs"), ("tests", "*.cs"), ("examples", "*.cs"), ("docs", "*.md") })
            foreach (var f in Directory.EnumerateFiles(Path.Combine(root, dir), pattern, SearchOption.AllDirectories))
                if (!bin.IsMatch(Path.GetRelativePath(root, f))) yield return f;
        yield return Path.Combine(root, "README.md");
    }

    internal static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "LoopRpt.sln")) && Directory.Exists(Path.Combine(dir.FullName, "docs")))
                return dir.FullName;
        throw new InvalidOperationException($"No repository root (LoopRpt.sln beside docs/) above {AppContext.BaseDirectory}.");
    }
}
