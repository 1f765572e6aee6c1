using System.Net;
using System.Text.Json;
using LoopRpt.Checkpoints;
using LoopRpt.Hosting;
using LoopRpt.Inference;
using LoopRpt.MLNet;
using LoopRpt.Tests.Cli;
using LoopRpt.Tests.Server;
using LoopRpt.Tokenization;
using Microsoft.Extensions.Options;
using Microsoft.ML;

namespace LoopRpt.Tests.Agreement;

/// <summary>
/// One model directory whose tokenizer is a byte-level BPE learned by ML.NET's <see cref="TokenizingEstimator"/>, and a
/// hosting model store seeded from it (served with the same tokenizer as a <see cref="LoopRptTokenizerService"/>).
/// </summary>
public sealed class TokenizationAgreementFixture : IDisposable
{
    /// <summary>Prompts with leading spaces, non-ASCII text and punctuation; the first is the example.</summary>
    public static readonly string[] Prompts = ["Copyright (C) the", "the cat sat on the mat.", " a dog ran to the river", "héllo wörld ✓", "x=3;y=x+1;?y=4"];

    public TokenizationAgreementFixture()
    {
        Root = CliRunner.TempDir();
        var ml = new MLContext(seed: 1);
        var docs = MLNet.MlNetTestData.Docs(60, 3).Concat(Prompts.Select(p => new MLNet.Doc { Text = p }));
        Tokenizing = ml.LoopRpt().Tokenize("Tokens", "Text", vocabularySize: 300).Fit(ml.Data.LoadFromEnumerable(docs));
        Model = Path.Combine(Root, "model");
        using (var lm = TestUtil.TinyModel(vocab: Tokenizing.Tokenizer.VocabularySize))
            ModelDirectory.Save(Model, lm, new ModelMeta { Tokenizer = Tokenizing.Tokenizer.Spec.ToJsonObject() });
        Store = new ModelStore(Options.Create(new ModelStoreOptions { Root = Path.Combine(Root, "store"), InitialModelDirectory = Model }),
            new LoopRptTokenizerService(Tokenizing.Tokenizer));
        Store.EnsureLoaded();
    }

    public string Root { get; }
    public string Model { get; }
    public TokenizingTransformer Tokenizing { get; }
    public ModelStore Store { get; }

    public void Dispose()
    {
        Store.Dispose();
        try { Directory.Delete(Root, recursive: true); } catch (IOException) { }
    }
}

/// <summary>
/// The same prompt gives the same token ids through every face: the library (core codec and <see cref="ModelOpener"/>),
/// the CLI, the server (over a fixed model and over the model store), the model store source, and ML.NET; and the CLI and
/// hosting join training documents the same way (<see cref="DocumentTokens"/>).
/// </summary>
public class TokenizationAgreementTests(TokenizationAgreementFixture fx) : IClassFixture<TokenizationAgreementFixture>
{
    public static TheoryData<string> Prompts => new(TokenizationAgreementFixture.Prompts);

    /// <summary>The reference: the tokenizer's own content ids (Microsoft.ML.Tokenizers), the start id put in front by hand.</summary>
    private int[] Expected(string prompt)
    {
        var t = fx.Tokenizing.Tokenizer;
        var eot = t.Inner.EncodeToIds("<|endoftext|>");
        Assert.Equal([t.EosTokenId!.Value], eot);                                  // the BPE's end-of-text is one special token
        return [t.EosTokenId!.Value, .. t.Inner.EncodeToIds(prompt)];
    }

    [Theory]
    [MemberData(nameof(Prompts))]
    public void LibraryStoreAndMlNetGiveTheSameIdsWithTheStartToken(string prompt)
    {
        var expected = Expected(prompt);
        Assert.Equal(expected, TextCodec.From(fx.Tokenizing.Tokenizer).EncodePrompt(prompt));
        using (var opened = ModelOpener.Open(fx.Model))
            Assert.Equal(expected, opened.Codec!.EncodePrompt(prompt));
        using (var lease = new ModelStoreSource(fx.Store).Acquire())
            Assert.Equal(expected, lease.Codec.EncodePrompt(prompt));
        using (var opened = ModelOpener.Open(fx.Store.Root))                          // the store root opens its current version
            Assert.Equal(expected, opened.Codec!.EncodePrompt(prompt));
        Assert.Equal(expected, fx.Tokenizing.Encode(prompt));                           // ML.NET's column (AddBos by default)
    }

    [Theory]
    [MemberData(nameof(Prompts))]
    public void CliGenerateEncodesThePromptAsTheLibraryDoes(string prompt)
    {
        foreach (var model in new[] { fx.Model, fx.Store.VersionDirectory(fx.Store.CurrentVersion) })
        {
            var r = CliRunner.Run("generate", "--model", model, "--prompt", prompt, "-n", "1", "--format", "Json", "--threads", "1");
            Assert.True(r.Code == 0, r.ToString());
            var ids = JsonDocument.Parse(r.Out).RootElement.GetProperty("prompt_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            Assert.Equal(Expected(prompt), ids);
        }
    }

    [Fact]
    public async Task ServerCountsTheSamePromptTokensOverAFixedModelAndOverTheStore()
    {
        using var fixedModel = LoopRptModel.Load(fx.Model);
        await using var overModel = await LoopbackServer.StartAsync(fixedModel);
        await using var overStore = await LoopbackServer.StartAsync(new ModelStoreSource(fx.Store, "tiny-test"));
        foreach (var prompt in TokenizationAgreementFixture.Prompts)
        {
            var body = JsonSerializer.Serialize(new { prompt, max_tokens = 1, temperature = 0 });
            foreach (var server in new[] { overModel, overStore })
            {
                var (status, json) = await OpenAIServerTests.Post(server, "/v1/completions", body);
                Assert.Equal(HttpStatusCode.OK, status);
                Assert.Equal(Expected(prompt).Length, json.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
            }
        }
    }

    [Fact]
    public void CliAndHostingJoinTrainingDocumentsTheSameWay()
    {
        var docs = TokenizationAgreementFixture.Prompts;
        var t = fx.Tokenizing.Tokenizer;
        int eot = t.EosTokenId!.Value;
        // Independent: the rule written out for a tokenizer whose one end-of-text id is also its start id: "EOT d1 EOT d2 ...".
        var expected = docs.SelectMany(d => new[] { eot }.Concat(t.Inner.EncodeToIds(d))).ToArray();

        var cli = LoopRpt.Cli.Commands.ModelTraining.TokenStream(docs, TextCodec.From(t), sequenceLength: 8);
        Assert.Equal(expected, cli);

        var folder = Path.Combine(fx.Root, "data-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(folder);
        for (int i = 0; i < docs.Length; i++) File.WriteAllText(Path.Combine(folder, $"{i:D2}.txt"), docs[i]);
        var (train, heldOut) = DataFolder.Load(folder, null, 0.0, new LoopRptTokenizerService(t), t.VocabularySize);
        Assert.Equal(expected, train);
        Assert.Empty(heldOut);
    }

    [Fact]
    public void DistinctStartAndEndIdsFrameEachDocument()
    {
        // A Llama-style tokenizer (BOS 1, EOS 2): each document is BOS ids EOS; a prompt is BOS ids.
        var codec = TextCodec.Create(s => s.Select(c => (int)c).ToArray(), ids => new string(ids.Select(i => (char)i).ToArray()), 1, 2, "chars");
        var stream = new List<int>();
        codec.AppendDocument(stream, "ab");
        codec.AppendDocument(stream, "c");
        Assert.Equal(new int[] { 1, 'a', 'b', 2, 1, 'c', 2 }, stream);
        Assert.Equal(new int[] { 1, 'a', 'b' }, codec.EncodePrompt("ab"));
        // Only an end-of-text id: it starts documents and prompts (GPT-2), and is written once between documents.
        var eotOnly = TextCodec.Create(s => s.Select(c => (int)c).ToArray(), ids => "", null, 0, "eot only");
        var joined = new List<int>();
        eotOnly.AppendDocument(joined, "ab");
        eotOnly.AppendDocument(joined, "c");
        Assert.Equal(new int[] { 0, 'a', 'b', 0, 'c' }, joined);
    }
}
