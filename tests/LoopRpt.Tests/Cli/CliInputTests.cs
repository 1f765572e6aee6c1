using System.Text;
using LoopRpt.Cli;
using LoopRpt.Cli.Input;
using LoopRpt.Tokenization;

namespace LoopRpt.Tests.Cli;

public sealed class CliInputTests
{
    [Fact]
    public void TokenizerVerbWritesAFileTheLibraryLoads()
    {
        var dir = CliRunner.TempDir();
        var corpus = Path.Combine(dir, "c.txt");
        File.WriteAllLines(corpus, CliRunner.CorpusLines());
        var tok = Path.Combine(dir, "out", "tok.json");
        var r = CliRunner.Run("tokenizer", "--input", corpus, "--vocab-size", "300", "--out", tok);
        Assert.True(r.Code == ExitCodes.Success, r.ToString());
        Assert.Contains("vocab_size=", r.Out);
        var t = LoopRptTokenizer.Create(TokenizerSpec.FromJson(File.ReadAllText(tok)));
        Assert.InRange(t.VocabularySize, 258, 300);
        Assert.Equal("the cat 3 sat", t.Decode(t.Encode("the cat 3 sat")));
    }

    [Fact]
    public void MissingInputIsAnInputError()
    {
        var r = CliRunner.Run("tokenizer", "--input", "/nonexistent/corpus.txt", "--out", Path.Combine(CliRunner.TempDir(), "t.json"));
        Assert.Equal(ExitCodes.InputError, r.Code);
        Assert.Contains("'/nonexistent/corpus.txt' does not exist", r.Err);
    }

    [Fact]
    public void EmptyCorpusIsAnInputError()
    {
        var dir = CliRunner.TempDir();
        var corpus = Path.Combine(dir, "empty.txt");
        File.WriteAllText(corpus, "\n  \n\n");
        var r = CliRunner.Run("tokenizer", "--input", corpus, "--out", Path.Combine(dir, "t.json"));
        Assert.Equal(ExitCodes.InputError, r.Code);
        Assert.Contains("corpus is empty", r.Err);
    }

    [Fact]
    public void InvalidUtf8IsAnInputErrorWithTheFix()
    {
        var dir = CliRunner.TempDir();
        var corpus = Path.Combine(dir, "latin1.txt");
        File.WriteAllBytes(corpus, Encoding.Latin1.GetBytes("caf\u00e9 au lait\n"));
        var r = CliRunner.Run("tokenizer", "--input", corpus, "--out", Path.Combine(dir, "t.json"));
        Assert.Equal(ExitCodes.InputError, r.Code);
        Assert.Contains("not valid UTF-8", r.Err);
        Assert.Contains("iconv", r.Err);
    }

    [Fact]
    public void ReadsCsvWithQuotesTsvColumnsAndFolders()
    {
        var dir = CliRunner.TempDir();
        File.WriteAllText(Path.Combine(dir, "a.csv"), "id,Text\n1,\"hello, world\"\n2,\"multi\nline \"\"quoted\"\"\"\n3,\n");
        File.WriteAllText(Path.Combine(dir, "b.tsv"), "text\tlabel\nfirst doc\t1\nsecond doc\t0\n");
        var folder = Path.Combine(dir, "docs");
        Directory.CreateDirectory(Path.Combine(folder, "sub"));
        File.WriteAllText(Path.Combine(folder, "2.txt"), "file two\nsecond line\n");
        File.WriteAllText(Path.Combine(folder, "sub", "1.txt"), "file one\n");
        File.WriteAllText(Path.Combine(folder, "ignored.md"), "not text\n");

        Assert.Equal(["hello, world", "multi\nline \"quoted\""], Corpus.Read([Path.Combine(dir, "a.csv")], column: "text"));
        Assert.Equal(["first doc", "second doc"], Corpus.Read([Path.Combine(dir, "b.tsv")]));
        Assert.Equal(["file two", "second line", "file one"], Corpus.Read([folder]));
        Assert.Equal(["file two\nsecond line", "file one"], Corpus.Read([folder], DocumentSplit.Files));
    }

    [Fact]
    public void MissingColumnNamesTheAvailableOnes()
    {
        var dir = CliRunner.TempDir();
        var tsv = Path.Combine(dir, "b.tsv");
        File.WriteAllText(tsv, "text\tlabel\nfirst doc\t1\n");
        var r = CliRunner.Run("tokenizer", "--input", tsv, "--column", "body", "--out", Path.Combine(dir, "t.json"));
        Assert.Equal(ExitCodes.InputError, r.Code);
        Assert.Contains("Could not find input column 'body'", r.Err);
        Assert.Contains("'text', 'label'", r.Err);
    }

    [Fact]
    public void FolderWithoutTextFilesIsAnInputError()
    {
        var dir = CliRunner.TempDir();
        var ex = Assert.Throws<CliException>(() => Corpus.Read([dir]));
        Assert.Equal(ExitCodes.InputError, ex.ExitCode);
        Assert.Contains("no .txt files", ex.Message);
    }
}
