namespace ModelBuilderStyle;

/// <summary>A small generated corpus (subject–verb–object sentences) in the TSV layout <see cref="LoopedLmModel.Train"/> reads.</summary>
public static class SampleCorpus
{
    private static readonly string[] Subjects = ["the cat", "a dog", "the bird", "my friend", "the old man", "a small child"];
    private static readonly string[] Verbs = ["sat on", "looked at", "ran to", "jumped over", "walked past"];
    private static readonly string[] Objects = ["the mat", "a tree", "the river", "the red house", "a quiet garden"];

    /// <summary>Deterministic sentences for a seed.</summary>
    /// <param name="count">Number of sentences.</param>
    /// <param name="seed">Seed of the local generator.</param>
    /// <returns>The sentences.</returns>
    public static IReadOnlyList<string> Sentences(int count, int seed)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        var rng = new Random(seed);
        return Enumerable.Range(0, count)
            .Select(_ => $"The {Pick(rng, Subjects)} {Pick(rng, Verbs)} {Pick(rng, Objects)}.".Replace("The the ", "The ").Replace("The a ", "A ").Replace("The my ", "My "))
            .ToArray();
    }

    /// <summary>Writes <paramref name="count"/> sentences as a TSV with a "Text" header and returns its path.</summary>
    /// <param name="path">The file to write (its folder is created if missing).</param>
    /// <param name="count">Number of sentences.</param>
    /// <param name="seed">Seed of the local generator.</param>
    /// <returns><paramref name="path"/>.</returns>
    public static string WriteTsv(string path, int count, int seed)
    {
        var folder = Path.GetDirectoryName(Path.GetFullPath(path));
        if (!string.IsNullOrEmpty(folder)) Directory.CreateDirectory(folder);
        File.WriteAllLines(path, ["Text", .. Sentences(count, seed)]);
        return path;
    }

    private static string Pick(Random rng, string[] words) => words[rng.Next(words.Length)];
}
