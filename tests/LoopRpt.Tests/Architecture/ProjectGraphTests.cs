using System.Text.RegularExpressions;
using System.Xml.Linq;

namespace LoopRpt.Tests.Architecture;

/// <summary>
/// The project graph docs/architecture.md describes, read from the repository's own files: which packages and projects
/// each project references, who may see internals, and that the core's namespaces depend on each other in one direction.
/// </summary>
public class ProjectGraphTests
{
    private static readonly string Root = FindRoot();

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "LoopRpt.sln"))) return dir.FullName;
        throw new InvalidOperationException($"No LoopRpt.sln above '{AppContext.BaseDirectory}'.");
    }

    private static XDocument Project(string name) => XDocument.Load(Path.Combine(Root, "src", name, name + ".csproj"));

    private static IReadOnlyList<string> Items(XDocument project, string item)
        => project.Descendants(item).Select(e => (string?)e.Attribute("Include") ?? "").ToList();

    private static IReadOnlyList<string> ProjectReferences(string name)
        => Items(Project(name), "ProjectReference").Select(p => Path.GetFileNameWithoutExtension(p.Replace('\\', '/'))).ToList();

    [Fact]
    public void TheCoreReferencesNoMicrosoftMlPackageButTheTokenizers()
    {
        var packages = Items(Project("LoopRpt"), "PackageReference");
        Assert.Contains("TorchSharp", packages);
        var ml = packages.Where(p => p.StartsWith("Microsoft.ML", StringComparison.Ordinal)).ToList();
        Assert.All(ml, p => Assert.StartsWith("Microsoft.ML.Tokenizers", p));
        Assert.Empty(ProjectReferences("LoopRpt"));
    }

    [Fact]
    public void TheMlNetSurfaceIsItsOwnProjectOverTheCore()
    {
        Assert.Contains("Microsoft.ML", Items(Project("LoopRpt.MLNet"), "PackageReference"));
        Assert.Equal(["LoopRpt"], ProjectReferences("LoopRpt.MLNet"));
        Assert.False(Directory.Exists(Path.Combine(Root, "src", "LoopRpt", "MLNet")), "the ML.NET code must not stay inside the core");
    }

    [Fact]
    public void FacesReferenceOnlyTheLayersBelowThem()
    {
        Assert.Equal(["LoopRpt"], ProjectReferences("LoopRpt.AI"));               // not Hosting: the model-source abstraction is in the core
        Assert.Equal(["LoopRpt"], ProjectReferences("LoopRpt.Hosting"));
        Assert.Equal(["LoopRpt.AI"], ProjectReferences("LoopRpt.Server"));
        Assert.Equal(["LoopRpt", "LoopRpt.Hosting", "LoopRpt.Server"], ProjectReferences("LoopRpt.Cli"));   // the store verbs bind to hosting's one ModelStore
    }

    [Fact]
    public void InternalsAreVisibleOnlyToTheTests()
    {
        foreach (var dir in Directory.GetDirectories(Path.Combine(Root, "src")))
        {
            var name = Path.GetFileName(dir);
            var path = Path.Combine(dir, name + ".csproj");
            if (!File.Exists(path)) continue;
            Assert.All(Items(XDocument.Load(path), "InternalsVisibleTo"), friend => Assert.Equal("LoopRpt.Tests", friend));
        }
    }

    /// <summary>The text with line comments (and so XML docs) removed: a doc that mentions a type is not a dependency.</summary>
    private static string Code(string text) => Regex.Replace(text, @"//.*$", "", RegexOptions.Multiline);

    /// <summary>
    /// Namespaces of the core (LoopRpt.X) and the sibling namespaces each one's files name (<c>using LoopRpt.Y</c>, or a
    /// qualified <c>LoopRpt.Y.</c>, outside comments): the graph has no cycle, so every namespace can be read with only those below it.
    /// </summary>
    [Fact]
    public void TheCoresNamespacesFormNoCycle()
    {
        var core = Path.Combine(Root, "src", "LoopRpt");
        var names = Directory.GetDirectories(core).Select(Path.GetFileName).Where(n => n is not ("bin" or "obj")).Cast<string>().ToHashSet();
        var edges = names.ToDictionary(n => n, _ => new HashSet<string>());
        var reference = new Regex(@"(?:using(?:\s+static)?\s+|[^\w.])LoopRpt\.(\w+)\b");
        foreach (var n in names)
            foreach (var file in Directory.EnumerateFiles(Path.Combine(core, n), "*.cs", SearchOption.AllDirectories))
                foreach (Match m in reference.Matches(Code(File.ReadAllText(file))))
                    if (m.Groups[1].Value is var target && target != n && names.Contains(target)) edges[n].Add(target);
        Assert.True(edges.Values.Sum(e => e.Count) > 5, "the scan should see the namespaces' references");

        var state = new Dictionary<string, int>();                     // 1: on the current path, 2: done
        var path = new Stack<string>();
        void Visit(string n)
        {
            state[n] = 1;
            path.Push(n);
            foreach (var m in edges[n].Order(StringComparer.Ordinal))
            {
                if (state.GetValueOrDefault(m) == 1)
                    Assert.Fail($"namespace cycle: {string.Join(" -> ", path.Reverse().SkipWhile(x => x != m))} -> {m}");
                if (state.GetValueOrDefault(m) == 0) Visit(m);
            }
            path.Pop();
            state[n] = 2;
        }
        foreach (var n in names.Order(StringComparer.Ordinal)) if (state.GetValueOrDefault(n) == 0) Visit(n);
    }
}
